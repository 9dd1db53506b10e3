"""Integer arithmetic of the accelerator, defined once.

The golden model, the PyTorch fake-quant model, the gateware testbenches and the
quantizer all call these functions; docs/numerics.md states the contract in prose.

Every function works on Python ints, NumPy integer arrays and torch integer tensors
(through their operators and methods: this module never imports torch, it is part of the
contract layer `hw.spec`). The `*_real` variants compute the same integers from real
values at power-of-two scales, in float64, which is exact for every value the hardware
can produce; the fake-quant model uses them, and QAT passes a straight-through `floor`
(`sw.quant.model.ste_floor`) so that they carry gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "INPUT_FRAC_BITS",
    "LEAKY_MUL",
    "LEAKY_SHIFT",
    "find_shift_scale",
    "int_range",
    "quantize",
    "quantize_input",
    "quantize_pixels",
    "requant",
    "requant_float",
    "requant_mul",
    "requant_real",
    "round_shift",
    "saturate",
]

#: Leaky ReLU slope of the hardware: alpha = 13 / 2**7 = 0.1015625 (Darknet uses 0.1).
LEAKY_MUL = 13
LEAKY_SHIFT = 7
#: The network input is pixel / 255 as int8 at scale 2**-7.
INPUT_FRAC_BITS = 7


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _where(cond: Any, a: Any, b: Any) -> Any:
    """a where cond, else b (a torch tensor `a` through its own `where` method)."""
    if _is_torch(a):
        return a.where(cond, b)
    return np.where(cond, a, b)


def _floor(t: Any) -> Any:
    return t.floor() if _is_torch(t) else np.floor(t)


def _clamp(t: Any, lo: int, hi: int) -> Any:
    return t.clamp(lo, hi) if _is_torch(t) else np.clip(t, lo, hi)


def int_range(bits: int, symmetric: bool = False) -> tuple[int, int]:
    """(lo, hi) of a signed `bits`-bit integer; symmetric drops the most negative value."""
    hi = (1 << (bits - 1)) - 1
    return (-hi if symmetric else -hi - 1), hi


def round_shift(x: Any, s: Any) -> Any:
    """Arithmetic right shift by s >= 0 with rounding half up: floor(x / 2**s + 1/2).

    s may be an int or an integer array broadcast against x. s = 0 returns x.
    """
    if isinstance(s, int):
        if s < 0:
            raise ValueError(f"shift must be >= 0, got {s}")
        return x if s == 0 else (x + (1 << (s - 1))) >> s
    if (s < 0).any():
        raise ValueError("shift must be >= 0")
    half = (1 << s) >> 1  # 0 where s == 0
    return (x + half) >> s


def saturate(x: Any, bits: int, symmetric: bool = False) -> Any:
    """Clamp to the signed `bits`-bit range."""
    lo, hi = int_range(bits, symmetric)
    if isinstance(x, int):
        return min(max(x, lo), hi)
    return x.clip(lo, hi)


def requant(acc: Any, shift: Any, leaky: bool, out_bits: int) -> Any:
    """Accumulator (bias included) to output integer: the requantizer's contract.

    y = saturate(round_shift(acc, shift))                    if not leaky or acc >= 0
    y = saturate(round_shift(acc * 13, shift + 7))           if leaky and acc < 0
    `shift` is per output channel (broadcast on the last axis) or a scalar.
    """
    if isinstance(acc, int):
        if leaky and acc < 0:
            return saturate(round_shift(acc * LEAKY_MUL, shift + LEAKY_SHIFT), out_bits)
        return saturate(round_shift(acc, shift), out_bits)
    pos = round_shift(acc, shift)
    if leaky:
        neg = round_shift(acc * LEAKY_MUL, shift + LEAKY_SHIFT)
        pos = _where(acc < 0, neg, pos)
    return saturate(pos, out_bits)


def requant_real(acc_real: Any, f_out: Any, leaky: bool, out_bits: int,
                 floor: Callable[[Any], Any] | None = None) -> Any:
    """`requant` on real values: returns the output integers (as floats).

    acc_real is the accumulator's real value (acc * 2**-(f_x + f_w)); the result equals
    requant(acc, f_x + f_w - f_out, leaky, out_bits) exactly in float64. Rounding uses
    floor(t + 1/2); `floor` replaces the plain floor (QAT passes one whose gradient is
    straight-through); the values are the same either way. `f_out` may be a tensor
    holding an integer (a learned scale).
    """
    t = acc_real * 2.0 ** f_out
    if leaky:
        t = _where(t < 0, t * (LEAKY_MUL / (1 << LEAKY_SHIFT)), t)
    lo, hi = int_range(out_bits)
    return _clamp((floor or _floor)(t + 0.5), lo, hi)


def quantize(x: Any, f: Any, bits: int, symmetric: bool = False) -> np.ndarray:
    """Real values to integers at scale 2**-f: saturate(floor(x * 2**f + 1/2)), int64.

    f may be an array broadcast against x (per-channel scales on axis 0 of weights
    need `f[:, None, ...]`).
    """
    q = np.floor(np.asarray(x, dtype=np.float64) * np.exp2(np.asarray(f, np.float64)) + 0.5)
    lo, hi = int_range(bits, symmetric)
    return np.clip(q, lo, hi).astype(np.int64)


def quantize_input(pixels: np.ndarray, f: int = INPUT_FRAC_BITS, bits: int = 8) -> np.ndarray:
    """uint8 pixels (p / 255 in [0, 1]) to int8 at scale 2**-f, exactly in integers.

    q = saturate(floor(p * 2**f / 255 + 1/2)) = saturate((p * 2**(f+1) + 255) // 510).
    """
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise TypeError(f"quantize_input wants uint8 pixels, got {p.dtype}")
    q = (p.astype(np.int64) * (1 << (f + 1)) + 255) // 510
    return saturate(q, bits).astype(np.int8)


# -- the other two adjustment styles of the PTQ study (sw/eval/study.py); the hardware uses
# -- `requant` (power-of-two shift) only.

#: Largest |acc * M * 13| `requant_mul` accepts: int64 with headroom for the rounding add.
MUL_LIMIT = 1 << 62


def find_shift_scale(ratio: float, mult_bits: int = 16, max_shift: int = 56) -> tuple[int, int]:
    """Integer multiplier and right shift approximating a real ratio > 0: (M, n).

    n is the largest shift in [0, max_shift] with M = floor(ratio * 2**n + 1/2) < 2**mult_bits,
    so M / 2**n is within 2**-(n+1) of ratio, and M >= 2**(mult_bits-1) (a relative error
    below 2**-mult_bits) unless n = max_shift. Raises ValueError when even n = 0 overflows.
    """
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"find_shift_scale: ratio must be a positive number, got {ratio!r}")
    if mult_bits < 2 or max_shift < 0:
        raise ValueError("find_shift_scale: need mult_bits >= 2 and max_shift >= 0")
    limit = 1 << mult_bits
    if math.floor(ratio + 0.5) >= limit:
        raise ValueError(f"find_shift_scale: ratio {ratio} needs more than {mult_bits} bits")
    n = min(max_shift, max(0, mult_bits - math.frexp(ratio)[1]))  # ratio < 2**(exp)
    while n < max_shift and math.floor(math.ldexp(ratio, n + 1) + 0.5) < limit:
        n += 1
    while math.floor(math.ldexp(ratio, n) + 0.5) >= limit:
        n -= 1
    return math.floor(math.ldexp(ratio, n) + 0.5), n


def requant_mul(acc: Any, mult: Any, shift: Any, leaky: bool, out_bits: int) -> Any:
    """Integer-multiplier requantization: `requant` with the accumulator first times M.

    y = saturate(round_shift(acc * M, n))                    if not leaky or acc >= 0
    y = saturate(round_shift(acc * M * 13, n + 7))           if leaky and acc < 0
    M (>= 0) and n broadcast against acc (per output channel). Integer arrays or tensors;
    raises ValueError if a product could leave int64 (|acc| * max M * 13 >= 2**62).
    """
    if isinstance(acc, int):
        acc = np.int64(acc)
    peak = int(abs(acc).max()) * int(np.max(np.asarray(mult))) * LEAKY_MUL
    if peak >= MUL_LIMIT:
        raise ValueError(f"requant_mul: |acc * M * 13| may reach {peak} >= 2**62, "
                         "inexact in int64")
    prod = acc * mult
    pos = round_shift(prod, shift)
    if leaky:
        neg = round_shift(prod * LEAKY_MUL, shift + LEAKY_SHIFT)
        pos = _where(acc < 0, neg, pos)
    return saturate(pos, out_bits)


def requant_float(acc: Any, ratio: Any, leaky: bool, out_bits: int) -> Any:
    """Real-multiplier requantization in float64 (floats holding integers in, out).

    y = saturate(floor(acc * r + 1/2)), with acc * 13 * (r / 128) in place of acc * r
    where leaky and acc < 0 (the contract's slope 13/128, applied before rounding).
    """
    t = acc * ratio
    if leaky:
        t = _where(acc < 0, (acc * LEAKY_MUL) * (ratio / (1 << LEAKY_SHIFT)), t)
    lo, hi = int_range(out_bits)
    return _clamp(_floor(t + 0.5), lo, hi)


def quantize_pixels(pixels: np.ndarray, top: int, bits: int) -> np.ndarray:
    """uint8 pixels to integers: saturate(floor(p * top / 255 + 1/2)), int64.

    Exact in integers: (2 * p * top + 255) // 510. top = 2**f gives the power-of-two
    scale 2**-f (`quantize_input` for f = 7, bits = 8); top = 2**(bits-1) - 1 gives the
    real scale 1 / top that maps the input's range [0, 1] onto the full code range.
    """
    p = np.asarray(pixels)
    if p.dtype != np.uint8:
        raise TypeError(f"quantize_pixels wants uint8 pixels, got {p.dtype}")
    return saturate((p.astype(np.int64) * (2 * top) + 255) // 510, bits)
