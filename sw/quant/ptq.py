"""Post-training quantization with power-of-two scales, exported as a bundle.

Every tensor is int8 at a power-of-two scale, real = q * 2**-f. Weights get f per
output channel or per tensor (from their max |w|); activations get one f per tensor,
calibrated on a folder of images from the float model's activations by max, outlier
removal at m standard deviations ("std"), percentile or MSE. Biases are int32 at the
accumulator scale. Tensors concatenated by a route share one f (the coarser).
Requantization shifts are kept within the hardware's range. The detection heads leave
the requantizer as `HwConfig.head_bits` integers. Optional calibration-time tuning
(activation equalization, grid fill, activation exponent search) lives in `sw.quant.tune`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from hw.spec import intmath
from hw.spec.config import Numerics
from sw.quant.calib import Calibration, act_clip, frac_bits_for_max
from sw.quant.model import FloatModel, float_heads
from sw.runtime.bundle import Bundle, BundleError
from sw.runtime.darknet import Conv, MaxPool, Network, Route, Upsample, YoloHead
from sw.runtime.graph import network_kinds, scale_groups, scale_roots

__all__ = ["ACT_METHODS", "QUANTIZER_VERSION", "WEIGHT_GRANULARITY", "QuantError",
           "QuantOptions", "check_network", "pow2_frac_bits", "quantize_network", "scale_table"]

ACT_METHODS = ("max", "std", "percentile", "mse")
#: Bumped whenever the quantizer's output for the same inputs changes; part of the
#: cache key of built bundles, so a cached bundle never outlives the code that made it.
QUANTIZER_VERSION = 1
WEIGHT_GRANULARITY = ("channel", "tensor")


@dataclass(frozen=True)
class QuantOptions:
    """PTQ choices. The defaults are the measured best (see README, "Accuracy")."""

    weights: str = "channel"        # "channel" or "tensor"
    activations: str = "mse"        # "max", "std", "percentile" or "mse"
    percentile: float = 99.99
    head_activations: str = "max"   # calibration of the detection heads' outputs
    bias_correction: bool = True    # fold the mean weight-quantization error into the bias
    std_m: float = 3.0              # "std": clip at |mean| + std_m * std (see `act_clip`)
    equalize: float = 0.0           # activation equalization strength alpha (0: off), sw.quant.tune
    fill: bool = False              # scale tensors so their real MSE clip fills a pow2 grid
    #                                 (sw.quant.tune; both keep the float function unchanged)
    fsearch: bool = False           # greedy f_out search on head SQNR (sw.quant.tune)
    search_images: int = 64         # at most this many calibration images score the f search

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_GRANULARITY:
            raise ValueError(f"weights must be one of {WEIGHT_GRANULARITY}, got {self.weights!r}")
        for name in ("activations", "head_activations"):
            if getattr(self, name) not in ACT_METHODS:
                raise ValueError(f"{name} must be one of {ACT_METHODS}")
        if not 0 < self.percentile <= 100:
            raise ValueError("percentile must lie in (0, 100]")
        if not (math.isfinite(self.std_m) and self.std_m > 0):
            raise ValueError(f"std_m must be a positive number, got {self.std_m!r}")
        if not (math.isfinite(self.equalize) and 0 <= self.equalize <= 1):
            raise ValueError(f"equalize must lie in [0, 1], got {self.equalize!r}")
        if self.search_images < 1:
            raise ValueError("search_images must be >= 1")

    @property
    def tag(self) -> str:
        """Short name: WEIGHTS-ACTIVATIONS[-bc][-eqA][-fill][-fs], e.g. channel-mse-bc,
        channel-std3-bc or channel-mse-bc-eq0.5-fs.

        The "std" method carries its m in the tag (std3, std2.5), equalization its alpha."""
        act = f"std{self.std_m:g}" if self.activations == "std" else self.activations
        return (f"{self.weights}-{act}" + ("-bc" if self.bias_correction else "")
                + (f"-eq{self.equalize:g}" if self.equalize else "")
                + ("-fill" if self.fill else "")
                + ("-fs" if self.fsearch else ""))

    @classmethod
    def from_tag(cls, tag: str) -> QuantOptions:
        parts = tag.split("-")
        extra: dict[str, Any] = {}
        suffixes = parts[2:]
        if suffixes[:1] == ["bc"]:
            extra["bias_correction"], suffixes = True, suffixes[1:]
        else:
            extra["bias_correction"] = False
        if suffixes[:1] and suffixes[0].startswith("eq"):
            try:
                extra["equalize"] = float(suffixes[0][2:])
            except ValueError:
                raise ValueError(f"{tag!r}: expected eqA with a number A, e.g. eq0.5") from None
            if not extra["equalize"]:
                raise ValueError(f"{tag!r}: eq0 is no equalization; leave it out")
            suffixes = suffixes[1:]
        if suffixes[:1] == ["fill"]:
            extra["fill"], suffixes = True, suffixes[1:]
        if suffixes[:1] == ["fs"]:
            extra["fsearch"], suffixes = True, suffixes[1:]
        if len(parts) < 2 or suffixes:
            raise ValueError(f"{tag!r}: expected WEIGHTS-ACTIVATIONS[-bc][-eqA][-fill][-fs]")
        act = parts[1]
        if act.startswith("std") and act != "std":
            try:
                extra["std_m"] = float(act[3:])
            except ValueError:
                raise ValueError(f"{tag!r}: expected stdM with a number M, e.g. std3") from None
            act = "std"
        return cls(weights=parts[0], activations=act, **extra)

    def manifest_dict(self) -> dict[str, Any]:
        """The options as recorded in a bundle; std_m only where a method uses it, so
        bundles of the other methods are unchanged."""
        d = asdict(self)
        if "std" not in (self.activations, self.head_activations):
            del d["std_m"]
        if not self.equalize:
            del d["equalize"]
        if not self.fill:
            del d["fill"]
        if not self.fsearch:
            del d["fsearch"], d["search_images"]
        return d


class QuantError(BundleError):
    """A network that cannot be quantized for the number formats (a bundle that cannot
    be made)."""


def check_network(net: Network, cfg: Numerics) -> None:
    """QuantError when a conv layer's dot product (k*k*Cin terms) could overflow the
    accumulator of `cfg` (`Numerics.max_dot_terms`)."""
    for i in net.conv_indices:
        k = net.layers[i].size ** 2 * net.in_shape(i)[2]
        if k > cfg.max_dot_terms:
            raise QuantError(
                f"{net.source}: layer {i} sums {k} products per output, more than the "
                f"{cfg.max_dot_terms} that acc_bits={cfg.acc_bits} provably holds: use a "
                "HwConfig with wider acc_bits (--hw-config), or a network with fewer input "
                "channels there")


def _act_frac_bits(cal: Calibration, i: int, method: str, pct: float, bits: int,
                   std_m: float = 3.0) -> int:
    m = cal.maxabs[i]
    f_max = frac_bits_for_max(m, bits)
    if method == "max":
        return f_max
    if method == "std":
        return frac_bits_for_max(act_clip(cal, i, "std", std_m=std_m), bits)
    s = np.abs(cal.samples[i]).astype(np.float64)
    if method == "percentile":
        return frac_bits_for_max(float(np.percentile(s, pct)) or m, bits)
    # mse: the f among a few candidates that minimises the quantization error
    x = np.concatenate([cal.samples[i].astype(np.float64), [m, -m]])
    best, best_err = f_max, math.inf
    for f in range(f_max, f_max + 5):
        err = float(np.mean((intmath.quantize(x, f, bits) * 2.0 ** -f - x) ** 2))
        if err < best_err:
            best, best_err = f, err
    return best


def _weight_frac_bits(w: np.ndarray, per_channel: bool, bits: int) -> np.ndarray:
    """f_w per output channel of OIHW weights (all equal when per tensor)."""
    m = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    if not per_channel:
        m = np.full_like(m, m.max())
    # an all-zero channel: any f works; take a neutral one
    return np.array([frac_bits_for_max(v, bits) if v > 0 else 0 for v in m], np.int64)


def pow2_frac_bits(net: Network, params: dict[int, tuple[np.ndarray, np.ndarray]],
                   cal: Calibration, opts: QuantOptions, act_bits: int, weight_bits: int,
                   head_bits: int, max_shift: int, bias_limit: int,
                   input_frac_bits: int = intmath.INPUT_FRAC_BITS,
                   f_out_delta: dict[int, int] | None = None,
                   ) -> tuple[dict[int, int], dict[int, int], dict[int, np.ndarray]]:
    """Power-of-two scales of every conv layer for any bit widths: (f_in, f_out, f_w).

    Calibrated f_out (moved by `f_out_delta[i]` where given, as the f search of
    `sw.quant.tune.search_frac_bits` chooses) and max-based f_w, then the constraints: route
    sources share the coarser f, 0 <= f_in + f_w - f_out <= max_shift, |bias| <= bias_limit at the
    accumulator scale; the network input is at 2**-input_frac_bits. `quantize_network`
    calls it with the HwConfig's widths.
    """
    heads = set(net.head_indices)
    convs = net.conv_indices
    f_out: dict[int, int] = {}
    for i in convs:
        head = i in heads
        method = opts.head_activations if head else opts.activations
        f_out[i] = _act_frac_bits(cal, i, method, opts.percentile,
                                  head_bits if head else act_bits, opts.std_m)
        f_out[i] += (f_out_delta or {}).get(i, 0)
    f_w = {i: _weight_frac_bits(params[i][0], opts.weights == "channel", weight_bits)
           for i in convs}

    # Fixed point of the constraints; each step only lowers some f, so it terminates.
    kinds = network_kinds(net)
    groups = [g for g in scale_groups(kinds) if len(g) > 1]
    for _ in range(100):
        changed = False
        # tensors concatenated by a route share the coarser scale
        for g in groups:
            lo = min(f_out[r] for r in g)
            for r in g:
                changed |= f_out[r] != lo
                f_out[r] = lo
        f_in = {i: _source_frac_bits(kinds, i - 1, f_out, input_frac_bits) for i in convs}
        for i in convs:
            # shift = f_in + f_w - f_out must lie in [0, max_shift]
            lo_fw = f_out[i] - f_in[i]
            if f_w[i].min() < lo_fw:  # output finer than the accumulator: coarsen it
                f_out[i] = f_in[i] + int(f_w[i].min())
                changed = True
            f_w[i] = np.minimum(f_w[i], f_out[i] - f_in[i] + max_shift)
            # the bias must fit the accumulator bound at scale 2**-(f_in + f_w)
            b = params[i][1]
            while True:
                bq = np.abs(np.floor(b * np.exp2(f_in[i] + f_w[i]) + 0.5))
                over = bq > bias_limit
                if not over.any():
                    break
                f_w[i] = np.where(over, f_w[i] - 1, f_w[i])
            if f_w[i].min() < f_out[i] - f_in[i]:
                f_out[i] = f_in[i] + int(f_w[i].min())
                changed = True
        if not changed:
            break
    else:
        raise RuntimeError("scale constraints did not converge")
    return f_in, f_out, f_w


def quantize_network(net: Network, model: FloatModel, cal: Calibration, cfg: Numerics,
                     opts: QuantOptions = QuantOptions(), provenance: dict[str, Any] | None = None,
                     log: Callable[[str], None] | None = None,
                     f_out_delta: dict[int, int] | None = None) -> Bundle:
    """Choose power-of-two scales, quantize weights and biases, and build a bundle.

    With `opts.equalize` (per-channel scales) and/or `opts.fill` (one scale per tensor
    that puts its real MSE clip on a power-of-two grid) the float model is first
    equalized (`sw.quant.tune.equalize`, same float function) and recalibrated on `cal.inputs`;
    with `opts.fsearch` the activation exponents are then searched on those images
    (`sw.quant.tune.search_frac_bits`, objective head SQNR in the golden model). `f_out_delta`
    moves calibrated exponents directly (what the search tries)."""
    if opts.equalize or opts.fill or opts.fsearch:
        from sw.quant import tune
        if not cal.inputs:
            raise ValueError("equalization, fill and f search need the calibration images "
                             "(Calibration.inputs)")
        base = replace(opts, equalize=0.0, fill=False, fsearch=False)
        model, _, cal = tune.transform(net, model, cal.inputs, opts.equalize, opts.fill,
                                       cfg.act_bits, cal)
        if opts.fsearch:
            imgs = cal.inputs[:opts.search_images]
            refs = [float_heads(model)(img) for img in imgs]
            f_out_delta, _ = tune.search_frac_bits(
                lambda d: quantize_network(net, model, cal, cfg, base, f_out_delta=d),
                lambda b: tune.head_sqnr(b, imgs, refs), network_kinds(net), net.head_indices,
                log=log)
    check_network(net, cfg)
    params = model.fused_params()
    heads = set(net.head_indices)
    f_in, f_out, f_w = pow2_frac_bits(net, params, cal, opts, cfg.act_bits, cfg.weight_bits,
                                      cfg.head_bits, cfg.max_shift, cfg.bias_limit,
                                      f_out_delta=f_out_delta)

    kinds = network_kinds(net)
    layers: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    scale: dict[int, int] = {}
    for i, layer in enumerate(net.layers):
        shape = list(net.shapes[i])
        if isinstance(layer, Conv):
            w, b = params[i]
            fw = f_w[i]
            wq = intmath.quantize(w, fw[:, None, None, None], cfg.weight_bits, symmetric=True)
            if opts.bias_correction:
                b = b - _weight_error_bias(net, i, w, wq * np.exp2(-fw)[:, None, None, None], cal)
            bq = np.clip(intmath.quantize(b, f_in[i] + fw, cfg.acc_bits), -cfg.bias_limit,
                         cfg.bias_limit)
            arrays[f"l{i}.weight"] = wq.transpose(0, 2, 3, 1).astype(np.int8)  # OHWI
            arrays[f"l{i}.bias"] = bq.astype(np.int32)
            arrays[f"l{i}.f_w"] = fw.astype(np.int8)
            layers.append({"kind": "conv", "size": layer.size, "stride": layer.stride,
                           "pad": layer.pad, "filters": layer.filters,
                           "activation": layer.activation, "head": i in heads,
                           "out_bits": cfg.head_bits if i in heads else cfg.act_bits,
                           "f_in": f_in[i], "f_out": f_out[i], "shape": shape})
            scale[i] = f_out[i]
        elif isinstance(layer, YoloHead):
            layers.append({"kind": "yolo", "anchors": [list(a) for a in layer.anchors],
                           "classes": layer.classes, "region": layer.region, "shape": shape})
        else:
            scale[i] = _source_frac_bits(kinds, i, f_out)
            entry: dict[str, Any] = {"kind": layer.kind, "f_out": scale[i], "shape": shape}
            if isinstance(layer, MaxPool):
                entry.update(size=layer.size, stride=layer.stride, padding=layer.padding)
            elif isinstance(layer, Upsample):
                entry.update(stride=layer.stride)
            elif isinstance(layer, Route):
                entry.update(layers=list(layer.layers))
            layers.append(entry)
    manifest = {
        "input": {"shape": [net.height, net.width, net.channels],
                  "frac_bits": intmath.INPUT_FRAC_BITS, "encoding": "pixel/255"},
        "layers": layers,
        "numerics": cfg.numerics.to_dict(),
        "numerics_id": cfg.numerics_id_hex,
        "quantization": {**opts.manifest_dict(), "calibration_images": cal.images,
                         "quantizer_version": QUANTIZER_VERSION,
                         **({"f_out_delta": {str(k): v for k, v in sorted(f_out_delta.items())}}
                            if f_out_delta else {})},
        "provenance": provenance or {},
    }
    bundle = Bundle(manifest, arrays).seal()
    if log:
        log(scale_table(bundle))
    return bundle


def _weight_error_bias(net: Network, i: int, w: np.ndarray, w_deq: np.ndarray,
                       cal: Calibration) -> np.ndarray:
    """Expected output shift from weight rounding: sum_k (w_q - w)[c, k] * E[x_k].

    Bias correction in the spirit of Nagel et al. 2019 (data-free quantization), with
    E[x] per input channel measured on the calibration images.
    """
    src = net.input_of(i)
    mean_in = np.concatenate([cal.means[j] for j in src])
    return np.einsum("oihw,i->o", w_deq - w, mean_in)


def _source_frac_bits(kinds: list[dict[str, Any]], j: int, f_out: dict[int, int],
                      input_frac_bits: int = intmath.INPUT_FRAC_BITS) -> int:
    """The scale of layer j's output (the network input's for j < 0)."""
    roots = scale_roots(kinds, j)
    return f_out[roots[0]] if roots else input_frac_bits


def scale_table(bundle: Bundle) -> str:
    """One line per conv layer: f_in, f_w range, f_out, shift range."""
    rows = ["layer  f_in  f_w      f_out  shift   bits"]
    for i, layer in enumerate(bundle.layers):
        if layer["kind"] == "conv":
            fw, s = bundle.f_w(i), bundle.shift(i)
            rows.append(f"{i:5d} {layer['f_in']:5d}  {fw.min():3d}..{fw.max():<3d} "
                        f"{layer['f_out']:5d}  {s.min():2d}..{s.max():<3d} {layer['out_bits']:4d}")
    return "\n".join(rows)


