"""Calibration of activation ranges: statistics of the float model's activations on
letterboxed images, and the clip ranges the power-of-two PTQ (`sw.quant.ptq`) and its
tuning (`sw.quant.tune`) choose from them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from sw.quant.model import FloatModel, image_tensor

__all__ = ["MSE_SAMPLES", "MSE_STEPS", "Calibration", "act_clip", "calibrate",
           "frac_bits_for_max", "mse_clip"]


def frac_bits_for_max(m: float, bits: int) -> int:
    """Largest f with round(m * 2**f) inside the signed `bits` range (m > 0)."""
    hi = (1 << (bits - 1)) - 1
    if m <= 0 or not math.isfinite(m):
        return 0
    f = math.floor(math.log2((hi + 0.5) / m))
    while m * 2.0 ** f >= hi + 0.5:  # guard log2 rounding at exact powers of two
        f -= 1
    return f


@dataclass
class Calibration:
    """Per conv layer: exact max |x| and a random sample of the float activations."""

    maxabs: dict[int, float]
    samples: dict[int, np.ndarray]
    images: int
    #: per-channel mean of every layer's output (key -1: the network input)
    means: dict[int, np.ndarray] = field(default_factory=dict)
    #: the letterboxed uint8 calibration images (for equalization and the f search)
    inputs: list[np.ndarray] = field(default_factory=list)


def calibrate(model: FloatModel, images: Iterable[np.ndarray], sample_per_image: int = 100_000,
              seed: int = 0, progress: Callable[[int], None] | None = None) -> Calibration:
    """Run the float model on letterboxed uint8 HWC images and collect statistics."""
    rng = np.random.default_rng(seed)
    convs = model.net.conv_indices
    maxabs = {i: 0.0 for i in convs}
    chunks: dict[int, list[np.ndarray]] = {i: [] for i in convs}
    sums: dict[int, np.ndarray] = {}
    inputs: list[np.ndarray] = []
    n = 0
    with torch.no_grad():
        for img in images:
            inputs.append(img)
            x = image_tensor(img)
            outs = model(x, keep=True)
            for j, y in [(-1, x), *enumerate(outs)]:
                m = y[0].double().mean(dim=(1, 2)).numpy()
                sums[j] = sums.get(j, 0) + m
            for i in convs:
                a = outs[i].numpy().ravel()
                maxabs[i] = max(maxabs[i], float(np.abs(a).max()))
                take = min(sample_per_image, a.size)
                chunks[i].append(a[rng.choice(a.size, take, replace=False)].astype(np.float32))
            n += 1
            if progress:
                progress(n)
    if n == 0:
        raise ValueError("calibration needs at least one image")
    return Calibration(maxabs, {i: np.concatenate(c) for i, c in chunks.items()}, n,
                       {j: v / n for j, v in sums.items()}, inputs)


def act_clip(cal: Calibration, i: int, method: str, pct: float = 99.99,
             std_m: float = 3.0) -> float:
    """Clip range of layer i's activations for the range-based methods.

    max: the exact max |x| over the calibration images; percentile: the `pct` percentile
    of |x| over the layer's calibration samples (max |x| if that is 0); std (outlier
    removal at m standard deviations): min(max |x|, |mean(x)| + m * std(x)), mean and
    (population) std of the layer's signed calibration samples (max |x| if that is 0).
    """
    m = cal.maxabs[i]
    if method == "max":
        return m
    if method == "percentile":
        return float(np.percentile(np.abs(cal.samples[i]).astype(np.float64), pct)) or m
    if method == "std":
        x = cal.samples[i].astype(np.float64)
        return min(m, abs(float(x.mean())) + std_m * float(x.std())) or m
    raise ValueError(f"act_clip: no clip range for method {method!r}")


#: Clip candidates of the real-scale mse method: max |x| * 2**(-t/8), t = 0..MSE_STEPS.
MSE_STEPS = 32
#: Samples of a tensor the real-scale mse clip search looks at (for speed).
MSE_SAMPLES = 200_000


def mse_clip(x: np.ndarray, maxabs: float, bits: int, steps: int = MSE_STEPS) -> float:
    """Clip range c = maxabs * 2**(-t/8), t in 0..steps, minimising the mean squared
    error of quantizing x (and +-maxabs) at the real scale c / (2**(bits-1) - 1)."""
    if maxabs <= 0:
        return maxabs
    hi = (1 << (bits - 1)) - 1
    x = np.concatenate([np.asarray(x, np.float64), [maxabs, -maxabs]])
    best, best_err = maxabs, math.inf
    for t in range(steps + 1):
        c = maxabs * 2.0 ** (-t / 8)
        s = c / hi
        q = np.clip(np.floor(x / s + 0.5), -hi - 1, hi)
        err = float(np.mean((q * s - x) ** 2))
        if err < best_err:
            best, best_err = c, err
    return best
