"""The arithmetic module against an independent exact reference (fractions)."""

from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch

from hw.spec import intmath


def ref_round_shift(x: int, s: int) -> int:
    return floor(Fraction(x, 2 ** s) + Fraction(1, 2))


def ref_requant(acc: int, s: int, leaky: bool, bits: int) -> int:
    real = Fraction(acc, 2 ** s)
    if leaky and acc < 0:
        real *= Fraction(13, 128)
    q = floor(real + Fraction(1, 2))
    return max(-(2 ** (bits - 1)), min(2 ** (bits - 1) - 1, q))


def tie_cases(s: int) -> list[int]:
    """Values at, just below and just above rounding ties, plus int32 extremes."""
    vals = {0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 31 - 2 ** 27, -(2 ** 31) + 2 ** 27}
    if s:
        for k in (-3, -2, -1, 0, 1, 2, 1000, -1000):
            for d in (-1, 0, 1):
                vals.add(k * 2 ** s + 2 ** (s - 1) + d)
    return sorted(vals)


@pytest.mark.parametrize("s", range(0, 39))
def test_round_shift_ties_all_shifts(s):
    xs = tie_cases(s)
    want = [ref_round_shift(x, s) for x in xs]
    assert [intmath.round_shift(x, s) for x in xs] == want
    assert intmath.round_shift(np.array(xs, np.int64), s).tolist() == want
    assert intmath.round_shift(torch.tensor(xs, dtype=torch.int64), s).tolist() == want
    # per-element shift arrays take the same path as scalars
    arr = intmath.round_shift(np.array(xs, np.int64), np.full(len(xs), s, np.int64))
    assert arr.tolist() == want


def test_round_shift_rounds_half_up():
    assert [intmath.round_shift(x, 1) for x in (-3, -1, 1, 3)] == [-1, 0, 1, 2]
    assert intmath.round_shift(-6, 2) == -1  # -1.5 -> -1
    assert intmath.round_shift(-10, 2) == -2  # -2.5 -> -2
    assert intmath.round_shift(5, 0) == 5


def test_round_shift_rejects_negative_shift():
    with pytest.raises(ValueError):
        intmath.round_shift(5, -1)
    with pytest.raises(ValueError):
        intmath.round_shift(np.array([5]), np.array([-1]))


def test_saturate_both_ends():
    x = np.array([-(2 ** 40), -129, -128, -127, 0, 126, 127, 128, 2 ** 40])
    assert intmath.saturate(x, 8).tolist() == [-128, -128, -128, -127, 0, 126, 127, 127, 127]
    assert intmath.saturate(x, 8, symmetric=True).tolist()[:3] == [-127, -127, -127]
    assert intmath.saturate(40000, 16) == 32767 and intmath.saturate(-40000, 16) == -32768
    assert intmath.int_range(8) == (-128, 127) and intmath.int_range(8, True) == (-127, 127)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("leaky", [False, True])
def test_requant_exhaustive_small(bits, leaky):
    """Every accumulator in [-4096, 4096] at every shift 0..12 (rounding ties included)."""
    acc = np.arange(-4096, 4097, dtype=np.int64)
    for s in range(13):
        got = intmath.requant(acc, s, leaky, bits)
        want = [ref_requant(int(a), s, leaky, bits) for a in acc]
        bad = np.flatnonzero(got != np.array(want))
        assert bad.size == 0, (f"shift {s}: first mismatch at acc={acc[bad[0]]}: "
                               f"expected {want[bad[0]]}, got {got[bad[0]]}")


@pytest.mark.parametrize("leaky", [False, True])
def test_requant_extremes_and_all_negative(leaky):
    accs = [2 ** 31 - 1, -(2 ** 31), -1, -64, -65, -(2 ** 27), 2 ** 27]
    for s in (0, 1, 7, 20, 31):
        for a in accs:
            want = ref_requant(a, s, leaky, 8)
            assert intmath.requant(a, s, leaky, 8) == want
            assert intmath.requant(np.array([a]), s, leaky, 8)[0] == want
    neg = -np.arange(1, 100_000, 7, dtype=np.int64)
    got = intmath.requant(neg, 3, True, 8)
    assert got.max() <= 0 and got.tolist() == [ref_requant(int(a), 3, True, 8) for a in neg]


def test_requant_per_channel_shift_broadcasts_on_last_axis():
    acc = np.arange(-600, 600, dtype=np.int64).reshape(-1, 3)
    shift = np.array([0, 3, 9])
    got = intmath.requant(acc, shift, True, 8)
    for c in range(3):
        assert got[:, c].tolist() == [ref_requant(int(a), int(shift[c]), True, 8)
                                      for a in acc[:, c]]


@pytest.mark.parametrize("leaky", [False, True])
@pytest.mark.parametrize("bits", [8, 16])
def test_requant_real_equals_integer_path(leaky, bits):
    rng = np.random.default_rng(7)
    acc = np.concatenate([rng.integers(-(2 ** 31), 2 ** 31, 20000),
                          np.arange(-2000, 2000), [2 ** 31 - 1, -(2 ** 31)]]).astype(np.int64)
    for f_acc, f_out in [(10, 3), (12, 12), (17, 1), (5, -2), (30, 0)]:
        s = f_acc - f_out
        want = intmath.requant(acc, s, leaky, bits)
        real = acc.astype(np.float64) * 2.0 ** -f_acc
        assert np.array_equal(intmath.requant_real(real, f_out, leaky, bits), want)
        t = intmath.requant_real(torch.from_numpy(real), f_out, leaky, bits)
        assert np.array_equal(t.numpy(), want)
        assert np.array_equal(intmath.requant(torch.from_numpy(acc), s, leaky, bits).numpy(),
                              want)


def test_quantize_rounds_half_up_and_saturates():
    x = np.array([2.5, -2.5, 0.49, -0.5, 1000.0, -1000.0]) / 4
    assert intmath.quantize(x, 2, 8).tolist() == [3, -2, 0, 0, 127, -128]
    assert intmath.quantize(x, 2, 8, symmetric=True).tolist()[-1] == -127
    # per-channel scales broadcast
    q = intmath.quantize(np.ones((2, 3)), np.array([[1], [3]]), 8)
    assert q.tolist() == [[2, 2, 2], [8, 8, 8]]


def test_quantize_input_exhaustive():
    p = np.arange(256, dtype=np.uint8)
    for f in (5, 6, 7):
        want = [min(127, floor(Fraction(int(v) * 2 ** f, 255) + Fraction(1, 2))) for v in p]
        assert intmath.quantize_input(p, f).tolist() == want
    assert intmath.quantize_input(p).dtype == np.int8
    with pytest.raises(TypeError):
        intmath.quantize_input(p.astype(np.int16))
