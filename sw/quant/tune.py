"""Calibration-time tuning of the power-of-two PTQ: equalization, grid fill, f search.

Three optional steps that `sw.quant.quantize_network` runs when `QuantOptions` asks
(equalization and fill change only the float parameters the quantizer starts from, the
search only the activation exponents; bundles stay plain power-of-two bundles):

- **Activation equalization** (`equalize`, tag suffix -eqA): leaky ReLU (either slope),
  maxpool, upsample and route are positively homogeneous per channel, so multiplying
  output channel c of a conv (weights and bias) by s_c > 0 and dividing the matching input
  column of every conv that reads it (through maxpool, upsample and route) leaves the
  float network's function unchanged. With s_c = (T / r_c)**alpha, r_c the channel's
  calibrated range and T the layer's largest, narrow channels get more of the per-tensor
  int8 grid, at the cost of smaller (coarser) consumer weights; alpha trades the two.
  The detection heads (linear int16 outputs read by the decoder) are never scaled.
- **Grid fill** (`fill_scales`, tag suffix -fill): the same transformation with one factor
  g in [1, 2) per tensor, chosen so that the tensor's MSE-optimal real clip (`sw.quant.mse_clip`)
  lands exactly on the top of a power-of-two grid, 127 * 2**-f: a pow2 scale then
  quantizes it like the real-scale "mse" style would.
- **Activation exponent search** (`search_frac_bits`, tag suffix -fs): starting from the
  calibrated f_out, greedily try f +- 1 per scale group (tensors a route concatenates
  share one f) and keep a change when it raises the mean head SQNR against the float
  model on the calibration images. The candidates are exact bundles run in the golden
  model, so the objective is that of the exported bundle.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from hw.spec import intmath
from sw.quant.calib import MSE_SAMPLES, Calibration, calibrate, mse_clip
from sw.quant.model import FloatModel, image_tensor
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import Network
from sw.runtime.golden import GoldenModel
from sw.runtime.graph import equalize_params, network_kinds, scale_groups

__all__ = ["channel_ranges", "equalization_scales", "equalize", "fill_scales",
           "head_sqnr", "search_frac_bits", "sqnr_db", "transform"]


def channel_ranges(model: FloatModel, images: Sequence[np.ndarray],
                   pct: float = 99.99) -> dict[int, np.ndarray]:
    """Per conv layer and output channel: the largest over images of the `pct` percentile
    of |x| (float model, letterboxed uint8 HWC images)."""
    convs = model.net.conv_indices
    rng: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for img in images:
            x = image_tensor(img)
            outs = model(x, keep=True)
            for i in convs:
                a = outs[i][0].abs().flatten(1).double().numpy()
                m = np.percentile(a, pct, axis=1)
                rng[i] = m if i not in rng else np.maximum(rng[i], m)
    return rng


def equalization_scales(ranges: dict[int, np.ndarray], heads: Sequence[int], alpha: float,
                        max_scale: float = 16.0) -> dict[int, np.ndarray]:
    """s_c = (T / r_c)**alpha, T = max_c r_c, capped at `max_scale`; 1 for dead channels
    and for the heads' outputs (not scaled)."""
    out = {}
    for i, r in ranges.items():
        s = np.ones_like(r, dtype=np.float64)
        if i not in heads and r.max() > 0:
            live = r > 0
            s[live] = np.minimum((r.max() / r[live]) ** alpha, max_scale)
        out[i] = s
    return out


def fill_scales(clips: dict[int, float], kinds: Sequence[dict], heads: Sequence[int],
                bits: int = 8) -> dict[int, float]:
    """Per conv layer the factor g >= 1 that maps its real clip onto the top of a
    power-of-two grid, (2**(bits-1) - 1) * 2**-f, with one f per route group (the coarser);
    1 for the heads and dead layers."""
    hi = (1 << (bits - 1)) - 1
    out = {i: 1.0 for i in clips}
    for g in scale_groups(kinds):
        live = [i for i in g if i not in heads and clips.get(i, 0) > 0]
        if not live:
            continue
        f = min(int(np.floor(np.log2(hi / clips[i]))) for i in live)
        for i in live:
            out[i] = hi * 2.0 ** -f / clips[i]
    return out


def equalize(model: FloatModel, scales: dict[int, np.ndarray]) -> FloatModel:
    """A copy of `model` with conv i's output channels multiplied by scales[i] and every
    consumer's matching input columns divided by them: the same float function
    (`sw.runtime.graph.equalize_params`)."""
    eq = copy.deepcopy(model)
    params = equalize_params(model.fused_params(), network_kinds(model.net), scales)
    for i, (w, b) in params.items():
        conv = eq.convs[str(i)]
        conv.weight.data = torch.from_numpy(w.astype(np.float32))
        conv.bias.data = torch.from_numpy(b.astype(np.float32))
    return eq


def transform(net: Network, model: FloatModel, images: Sequence[np.ndarray], alpha: float,
              fill: bool, act_bits: int, cal: Calibration | None = None,
              final_calibration: bool = True,
              ) -> tuple[FloatModel, list[dict[int, np.ndarray]], Calibration | None]:
    """Equalization (alpha > 0) then grid fill, as the quantizer runs them on calibration
    images. Returns the transformed model, the per-channel scales of each step (`equalize`
    them onto the float model, in order, to replay the transform without the images) and
    the calibration of the transformed model (`cal`, given or computed, when no step ran;
    None without `final_calibration`)."""
    steps: list[dict[int, np.ndarray]] = []
    if alpha:
        steps.append(equalization_scales(channel_ranges(model, images), net.head_indices, alpha))
        model = equalize(model, steps[-1])
        cal = None
    if fill:
        cal = cal or calibrate(model, images)
        clips = {i: mse_clip(cal.samples[i][:MSE_SAMPLES], cal.maxabs[i], act_bits)
                 for i in net.conv_indices}
        g = fill_scales(clips, network_kinds(net), net.head_indices, act_bits)
        steps.append({i: np.full(net.layers[i].filters, v) for i, v in g.items()})
        model = equalize(model, steps[-1])
        cal = None
    if cal is None and final_calibration:
        cal = calibrate(model, images)
    return model, steps, cal


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `x` against `ref`, in dB (inf if equal)."""
    noise = float(np.sum((ref - x) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref ** 2)) / noise)


def head_sqnr(bundle: Bundle, images: Sequence[np.ndarray],
              refs: Sequence[Sequence[np.ndarray]]) -> float:
    """Mean over images of the mean over heads of the SQNR (dB) of the bundle's heads (golden
    model) against `refs`, the float heads; as `sw.eval.evaluate` reports head SQNR."""
    golden = GoldenModel(bundle)
    vals = []
    for img, ref in zip(images, refs, strict=True):
        heads = golden.heads(intmath.quantize_input(img))
        # capped, so that an exact head cannot make the mean infinite
        vals.append(float(np.mean([min(sqnr_db(r, h), 200.0)
                                   for r, h in zip(ref, heads, strict=True)])))
    return float(np.mean(vals))


def search_frac_bits(build: Callable[[dict[int, int]], Bundle],
                     objective: Callable[[Bundle], float], kinds: Sequence[dict],
                     heads: Sequence[int], max_passes: int = 2, min_gain: float = 0.01,
                     log: Callable[[str], None] | None = None,
                     ) -> tuple[dict[int, int], float]:
    """Greedy coordinate search over per-group f_out offsets.

    `build(delta)` makes a bundle whose calibrated f_out are moved by delta[i] (conv layer
    -> offset; every member of a route group gets the same), `objective` scores it
    (higher is better). Each pass visits the non-head scale groups in network order and
    tries offsets -1 and +1 from the current one, keeping the best if it gains more than
    `min_gain`. Returns (delta, objective), never worse than delta = {}.
    """
    groups = [g for g in scale_groups(kinds) if not set(g) & set(heads)]
    delta: dict[int, int] = {}
    seen: dict[tuple, float] = {}

    def score(d: dict[int, int]) -> float:
        key = tuple(sorted((k, v) for k, v in d.items() if v))
        if key not in seen:
            seen[key] = objective(build({k: v for k, v in d.items() if v}))
        return seen[key]

    best = score(delta)
    if log:
        log(f"f search: start {best:.3f}")
    for n in range(max_passes):
        changed = False
        for g in groups:
            cur = delta.get(g[0], 0)
            cands = []
            for step in (-1, 1):
                d = {**delta, **{r: cur + step for r in g}}
                cands.append((score(d), d))
            val, d = max(cands, key=lambda c: c[0])
            if val > best + min_gain:
                best, delta, changed = val, d, True
                if log:
                    log(f"f search: pass {n + 1}, layers {g}: offset {d[g[0]]:+d} -> {val:.3f}")
        if not changed:
            break
    return {k: v for k, v in delta.items() if v}, best
