"""PyTorch models of the network: float (BN fused) and fake-quant (bit-exact int8).

Both walk the same layer graph (`run_graph`); only the convolution differs.
Tensors are NCHW. The fake-quant model computes in float64 on real values at
power-of-two scales and requantizes with `hw.spec.intmath.requant_real`, so its outputs
times 2**f_out equal the golden integer model's outputs exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hw.spec import intmath
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import Conv, ConvWeights, Network
from sw.runtime.graph import float_params, network_kinds

__all__ = ["DARKNET_LEAKY", "FakeQuantModel", "FloatModel", "MixedModel", "float_heads",
           "image_tensor", "maxpool_darknet", "run_graph", "ste_floor"]

DARKNET_LEAKY = 0.1


def image_tensor(images: np.ndarray) -> torch.Tensor:
    """Letterboxed uint8 images, HWC (one) or NHWC (a batch), as the float network's input:
    NCHW float32 in [0, 1] (pixel / 255)."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[None] if x.dim() == 3 else x
    return x.permute(0, 3, 1, 2).float() / 255.0


class _SteFloor(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g


def ste_floor(t: torch.Tensor) -> torch.Tensor:
    """torch.floor with a straight-through (identity) gradient; forward is exactly floor
    (the `floor` QAT passes to `hw.spec.intmath.requant_real`)."""
    return _SteFloor.apply(t)


def maxpool_darknet(x: torch.Tensor, size: int, stride: int, padding: int) -> torch.Tensor:
    """Darknet's maxpool: padding//2 before, the rest after; padded positions never win."""
    h, w = x.shape[-2:]
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    before = padding // 2
    after_h = (oh - 1) * stride + size - h - before
    after_w = (ow - 1) * stride + size - w - before
    if before or after_h or after_w:
        x = F.pad(x, (before, max(after_w, 0), before, max(after_h, 0)), value=float("-inf"))
    return F.max_pool2d(x, size, stride)


def run_graph(kinds: Sequence[dict[str, Any]], x: torch.Tensor,
              conv: Callable[[int, torch.Tensor], torch.Tensor],
              keep: bool = False) -> list[torch.Tensor | None]:
    """Execute a layer graph; `conv(i, x)` computes conv layer i.

    `kinds` holds per layer a dict with 'kind' and its parameters (bundle layer
    dicts have this form). Returns every layer's output when `keep`, else only those
    later layers read (route sources, heads) and the last one.
    """
    needed = {j for layer in kinds if layer["kind"] == "route" for j in layer["layers"]}
    needed |= {i - 1 for i, layer in enumerate(kinds) if layer["kind"] == "yolo"}
    outs: list[torch.Tensor | None] = []
    prev = x
    for i, layer in enumerate(kinds):
        kind = layer["kind"]
        if kind == "conv":
            y = conv(i, prev)
        elif kind == "maxpool":
            y = maxpool_darknet(prev, layer["size"], layer["stride"], layer["padding"])
        elif kind == "upsample":
            y = F.interpolate(prev, scale_factor=layer["stride"], mode="nearest")
        elif kind == "route":
            srcs = [outs[j] for j in layer["layers"]]
            y = srcs[0] if len(srcs) == 1 else torch.cat(srcs, dim=1)
        else:  # yolo: decoding happens in post-processing
            y = prev
        outs.append(y if keep or i in needed or kind == "yolo" else None)
        prev = y
    return outs


class FloatModel(torch.nn.Module):
    """The float network with batch norm folded into the convolutions (float32)."""

    def __init__(self, net: Network, params: list[ConvWeights]):
        super().__init__()
        self.net = net
        self.kinds = network_kinds(net)
        self.convs = torch.nn.ModuleDict()
        for i, (w, b) in float_params(net, params).items():
            layer: Conv = net.layers[i]
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], layer.size, layer.stride, layer.pad)
            conv.weight.data = torch.from_numpy(w.astype(np.float32))
            conv.bias.data = torch.from_numpy(b.astype(np.float32))
            self.convs[str(i)] = conv

    def fused_params(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per conv layer: (weights OIHW, bias) as float64 NumPy arrays."""
        return {int(k): (c.weight.detach().double().numpy(), c.bias.detach().double().numpy())
                for k, c in self.convs.items()}

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        y = self.convs[str(i)](x)
        if self.net.layers[i].activation == "leaky":
            y = F.leaky_relu(y, DARKNET_LEAKY)
        return y

    def forward(self, x: torch.Tensor, keep: bool = False) -> list[torch.Tensor | None]:
        """x: N x C x H x W in [0, 1]; returns layer outputs (see `run_graph`)."""
        return run_graph(self.kinds, x, self._conv, keep)

    def heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self.forward(x)
        return [outs[i] for i in self.net.head_indices]


class FakeQuantModel(torch.nn.Module):
    """Executes a bundle in float64 with the hardware's rounding: bit-exact to golden.

    Layer outputs are real values q * 2**-f_out (exact in float64); `ints()` turns them
    back into the integers the golden model produces.
    """

    def __init__(self, bundle: Bundle):
        super().__init__()
        self.bundle = bundle
        self.kinds = bundle.layers
        self.w: dict[int, torch.Tensor] = {}
        self.b: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.kinds):
            if layer["kind"] != "conv":
                continue
            fw = bundle.f_w(i).astype(np.float64)
            w = bundle.weight(i).astype(np.float64).transpose(0, 3, 1, 2)  # OHWI -> OIHW
            self.w[i] = torch.from_numpy(w * np.exp2(-fw)[:, None, None, None])
            self.b[i] = torch.from_numpy(bundle.bias(i) * np.exp2(-(layer["f_in"] + fw)))

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.kinds[i]
        acc = F.conv2d(x, self.w[i], self.b[i], layer["stride"], layer["pad"])
        q = intmath.requant_real(acc, layer["f_out"], layer["activation"] == "leaky",
                                 layer["out_bits"])
        return q * 2.0 ** -layer["f_out"]

    def forward(self, x_int: torch.Tensor | np.ndarray,
                keep: bool = False) -> list[torch.Tensor | None]:
        """x_int: int8 input, N x C x H x W (or a single H x W x C NumPy image)."""
        x = torch.as_tensor(np.asarray(x_int), dtype=torch.float64)
        if x.dim() == 3:
            x = x.permute(2, 0, 1)[None]
        x = x * 2.0 ** -self.bundle.input_frac_bits
        with torch.no_grad():
            return run_graph(self.kinds, x, self._conv, keep)

    def ints(self, outs: list[torch.Tensor | None]) -> list[np.ndarray | None]:
        """Layer outputs as integer HWC arrays (first image of the batch)."""
        res = []
        for i, y in enumerate(outs):
            if y is None:
                res.append(None)
                continue
            f = self.bundle.layers[i].get("f_out", self.bundle.layers[i - 1].get("f_out"))
            res.append(np.rint(y[0].permute(1, 2, 0).numpy() * 2.0 ** f).astype(np.int64))
        return res


class MixedModel:
    """A bundle's fake-quant model `fq` with only some conv layers quantized, the others float.

    A quantized conv layer computes as in `FakeQuantModel` (float64) on whatever real values
    reach it: its integer weights at 2**-f_w, its integer bias at 2**-(f_in + f_w), and its
    output requantization (the accumulator rounded to the 2**-f_out grid, the hardware's
    leaky slope 13/128, saturation to out_bits). A float layer is `reference`'s own
    convolution and leaky (slope 0.1) in float32, whose output keeps its real values. The
    input is the int8 image at 2**-input_frac_bits when `quantize_input`, else pixel / 255.
    Maxpool, upsample and route pass values through unchanged. `reference` must be the
    float model whose weights the bundle rounds (for equalized bundles the equalized one).
    Everything quantized gives `FakeQuantModel`'s outputs exactly, nothing `reference`'s.
    """

    def __init__(self, fq: FakeQuantModel, reference: FloatModel, quantized: Iterable[int],
                 quantize_input: bool):
        bundle = fq.bundle
        self.fq = fq
        self.reference = reference
        self.quantized = set(quantized)
        self.quantize_input = quantize_input
        convs = set(self.fq.w)
        if {int(k) for k in reference.convs} != convs or len(reference.kinds) != len(
                bundle.layers):
            raise ValueError("the float model's layer graph is not the bundle's")
        for i in convs:
            o, k, _, c = bundle.weight(i).shape
            if tuple(reference.convs[str(i)].weight.shape) != (o, c, k, k):
                raise ValueError(f"layer {i}: float weights "
                                 f"{tuple(reference.convs[str(i)].weight.shape)}, the bundle's "
                                 f"are {(o, c, k, k)} (OIHW)")
        if self.quantized - convs:
            raise ValueError(f"not conv layers of the bundle: {sorted(self.quantized - convs)}")

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i in self.quantized:
            return self.fq._conv(i, x.double())
        return self.reference._conv(i, x.float()).double()

    def forward(self, images: np.ndarray, keep: bool = False) -> list[torch.Tensor | None]:
        """Letterboxed uint8 images, HWC (one) or NHWC: layer outputs (see `run_graph`)."""
        if self.quantize_input:
            q = torch.from_numpy(intmath.quantize_input(images).astype(np.float64))
            x = (q[None] if q.dim() == 3 else q).permute(0, 3, 1, 2)
            x = x * 2.0 ** -self.fq.bundle.input_frac_bits
        else:
            x = image_tensor(images).double()
        with torch.no_grad():
            return run_graph(self.fq.kinds, x, self._conv, keep)

    __call__ = forward

    def heads(self, image: np.ndarray) -> list[np.ndarray]:
        """The detection heads of one letterboxed uint8 image, HWC float64 arrays."""
        outs = self.forward(image)
        return [outs[i][0].permute(1, 2, 0).numpy() for i in self.fq.bundle.head_indices]


def float_heads(model: FloatModel) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The float model as a function of one letterboxed uint8 HWC image: its detection
    heads, HWC float64 arrays."""
    def run(lb: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [h[0].permute(1, 2, 0).double().numpy() for h in model.heads(image_tensor(lb))]
    return run
