"""The golden NumPy integer model: executes a bundle exactly as the hardware does.

Feature maps are HWC integer arrays (int8 activations, head_bits heads). A convolution
is im2col + a float32 matrix product: every product is an integer below 2**14 and the
reduction is split into chunks of at most `EXACT_TERMS` terms, so every partial sum is an
integer below 2**24 and therefore exact in float32, whatever order BLAS adds in; chunks
are summed in int64. Bias add and requantization use `hw.spec.intmath`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from hw.spec import intmath
from sw.runtime.bundle import Bundle

__all__ = ["EXACT_TERMS", "GoldenModel", "conv_acc", "maxpool", "upsample"]

#: Longest float32 dot product that stays exact: 1024 * 128 * 127 < 2**24.
EXACT_TERMS = 1024


def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> np.ndarray:
    """(H, W, C) -> (Ho * Wo, k * k * C) patches in (kh, kw, c) order, zero padded."""
    if pad:
        x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    s0, s1, s2 = x.strides
    view = as_strided(x, (ho, wo, k, k, c), (s0 * stride, s1 * stride, s0, s1, s2),
                      writeable=False)
    return view.reshape(ho * wo, k * k * c)


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Exact integer accumulators of a convolution: (Ho, Wo, Cout) int64.

    x: (H, W, Cin) int8; w: (Cout, k, k, Cin) int8; b: (Cout,) int32.
    """
    cout, k = w.shape[:2]
    h, wd = x.shape[:2]
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    cols = im2col(x.astype(np.float32), k, stride, pad)
    wm = w.reshape(cout, -1).astype(np.float32).T
    terms = cols.shape[1]
    acc = np.zeros((cols.shape[0], cout), np.int64)
    for lo in range(0, terms, EXACT_TERMS):
        acc += (cols[:, lo:lo + EXACT_TERMS] @ wm[lo:lo + EXACT_TERMS]).astype(np.int64)
    acc += b.astype(np.int64)
    return acc.reshape(ho, wo, cout)


def maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Darknet's maxpool on an HWC map; padded positions never win."""
    h, w = x.shape[:2]
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    before = padding // 2
    after_h = max((oh - 1) * stride + size - h - before, 0)
    after_w = max((ow - 1) * stride + size - w - before, 0)
    lo = np.iinfo(x.dtype).min
    xp = np.pad(x, ((before, after_h), (before, after_w), (0, 0)), constant_values=lo)
    out = None
    for dy in range(size):
        for dx in range(size):
            tap = xp[dy:dy + (oh - 1) * stride + 1:stride, dx:dx + (ow - 1) * stride + 1:stride]
            out = tap if out is None else np.maximum(out, tap)
    return out


def upsample(x: np.ndarray, stride: int) -> np.ndarray:
    return x.repeat(stride, axis=0).repeat(stride, axis=1)


def host_layer(layer: dict, prev: np.ndarray, outs: list[np.ndarray | None]) -> np.ndarray:
    """A layer other than conv (maxpool, upsample, route, yolo) on HWC integer maps.

    `prev` is the previous layer's output, `outs` every earlier layer's (for route)."""
    kind = layer["kind"]
    if kind == "maxpool":
        return maxpool(prev, layer["size"], layer["stride"], layer["padding"])
    if kind == "upsample":
        return upsample(prev, layer["stride"])
    if kind == "route":
        srcs = [outs[j] for j in layer["layers"]]
        return srcs[0] if len(srcs) == 1 else np.concatenate(srcs, axis=2)
    return prev  # yolo: decoding happens in post-processing


class GoldenModel:
    """Runs a bundle on an int8 HWC input; every layer's integer output is available."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self._shift = {i: bundle.shift(i) for i, layer in enumerate(bundle.layers)
                       if layer["kind"] == "conv"}

    def conv(self, i: int, x: np.ndarray) -> np.ndarray:
        """Conv layer i with bias, requantization and activation."""
        layer = self.bundle.layers[i]
        acc = conv_acc(x, self.bundle.weight(i), self.bundle.bias(i), layer["stride"],
                       layer["pad"])
        y = intmath.requant(acc, self._shift[i], layer["activation"] == "leaky",
                            layer["out_bits"])
        return y.astype(np.int8 if layer["out_bits"] <= 8 else
                        np.int16 if layer["out_bits"] <= 16 else np.int32)

    def run(self, x: np.ndarray, keep: bool = True,
            progress: Callable[[int, int], None] | None = None) -> list[np.ndarray | None]:
        """Execute the bundle; returns per-layer outputs (None for dropped ones if not keep)."""
        b = self.bundle
        if x.dtype != np.int8 or x.shape != b.input_shape:
            raise ValueError(f"golden model input must be int8 {b.input_shape}, "
                             f"got {x.dtype} {x.shape}")
        layers = b.layers
        needed = {j for layer in layers if layer["kind"] == "route" for j in layer["layers"]}
        needed |= set(b.head_indices)
        outs: list[np.ndarray | None] = []
        prev = x
        for i, layer in enumerate(layers):
            kind = layer["kind"]
            y = self.conv(i, prev) if kind == "conv" else host_layer(layer, prev, outs)
            outs.append(y if keep or i in needed or kind == "yolo" else None)
            prev = y
            if progress:
                progress(i + 1, len(layers))
        return outs

    def heads(self, x: np.ndarray) -> list[np.ndarray]:
        """Real-valued detection-head outputs (HWC float64) for post-processing."""
        outs = self.run(x, keep=False)
        return [outs[i].astype(np.float64) * 2.0 ** -self.bundle.layers[i]["f_out"]
                for i in self.bundle.head_indices]
