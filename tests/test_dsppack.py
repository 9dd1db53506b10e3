"""Exhaustive proof of the two-products-per-DSP48E1 packing (hw/spec/dsppack.py).

Statement: for every int8 triple (x, w_hi, w_lo) (all 2**24), the pre-adder output
``pack(w_hi, w_lo)`` fits 25 signed bits, P = pack * x + 2**15 fits 48 (in fact 32) signed
bits, and the P bit fields the gateware reads, hi = P[31:16] and lo = {~P[15], P[14:0]}
(both signed), equal w_hi * x and w_lo * x; likewise for the unbiased variant
(hi = P[31:16] + P[15], lo = P[15:0]). Sums of packed products accumulated in P unpack
exactly up to `max_packed_terms` products, checked at the worst cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hw.spec.dsppack import (
    B_BITS,
    PACK_BIAS,
    PREADD_BITS,
    max_packed_terms,
    pack,
    packed_product,
    unpack,
    unpack_borrow,
)

INT8 = np.arange(-128, 128, dtype=np.int64)
Unpacker = Callable[[Any], tuple[Any, Any]]


def _signed_bits(p: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """P[hi:lo] read as a signed (hi - lo + 1)-bit number."""
    width = hi - lo + 1
    f = (p >> lo) & ((1 << width) - 1)
    return f - ((f >> (width - 1)) << width)


def _wires(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The gateware's reading of the biased P: hi = P[31:16], lo = {~P[15], P[14:0]}."""
    return _signed_bits(p, 16, 31), _signed_bits(p ^ (1 << 15), 0, 15)


def _wires_borrow(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unbiased reading: hi = P[31:16] + P[15], lo = P[15:0] signed."""
    return _signed_bits(p, 16, 31) + ((p >> 15) & 1), _signed_bits(p, 0, 15)


def _in_range(v: np.ndarray, bits: int) -> bool:
    return bool(v.min() >= -(1 << (bits - 1)) and v.max() < 1 << (bits - 1))


def exhaustive_mismatches(unpacker: Unpacker, biased: bool = True,
                          stop_early: bool = False) -> int:
    """Triples (of all 2**24) where `unpacker` of the DSP's P differs from the products."""
    w_hi, w_lo = (a.ravel() for a in np.meshgrid(INT8, INT8, indexing="ij"))
    ad = pack(w_hi, w_lo)
    assert _in_range(ad, PREADD_BITS), "pre-adder output leaves 25 bits"
    bad = 0
    for x in INT8:
        assert _in_range(np.array([x]), B_BITS)
        p = packed_product(x, w_hi, w_lo) if biased else ad * x
        assert _in_range(p, 32), "P leaves the 32 bits the fields use"
        hi, lo = unpacker(p)
        bad += int(np.count_nonzero((hi != w_hi * x) | (lo != w_lo * x)))
        if bad and stop_early:
            break
    return bad


@pytest.mark.parametrize(("unpacker", "biased"), [
    (unpack, True), (_wires, True), (unpack_borrow, False), (_wires_borrow, False)],
    ids=["unpack", "wires", "unpack_borrow", "wires_borrow"])
def test_every_int8_triple_unpacks_exactly(unpacker: Unpacker, biased: bool) -> None:
    assert exhaustive_mismatches(unpacker, biased) == 0


def _off_by_one_borrow(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hi, lo = unpack_borrow(p)
    return hi + ((p >> 14) & 1) - ((p >> 15) & 1), lo   # borrow taken from bit 14


def _no_borrow(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _signed_bits(p, 16, 31), _signed_bits(p, 0, 15)


def _bias_minus_one(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return unpack(p - 1)


@pytest.mark.parametrize(("unpacker", "biased"), [
    (_off_by_one_borrow, False), (_no_borrow, False), (_bias_minus_one, True),
    (unpack_borrow, True), (unpack, False)],
    ids=["borrow_bit14", "no_borrow", "bias_minus_one", "borrow_on_biased", "bias_missing"])
def test_the_proof_catches_planted_errors(unpacker: Unpacker, biased: bool) -> None:
    """The exhaustive check is not vacuous: wrong borrow corrections fail it."""
    assert exhaustive_mismatches(unpacker, biased, stop_early=True) > 0


def test_field_lemma_at_the_boundaries() -> None:
    """unpack(H * 2**16 + L + 2**15) == (H, L) for every L in [-2**15, 2**15) and extreme
    H, and fails just outside: the low field's exact range is [-2**15, 2**15)."""
    low = np.arange(-PACK_BIAS, PACK_BIAS, dtype=np.int64)
    for h in (-(1 << 31), -16384, -1, 0, 1, 16384, (1 << 31) - 1):
        hi, lo = unpack(h * (1 << 16) + low + PACK_BIAS)
        assert (hi == h).all() and (lo == low).all()
        for outside in (-PACK_BIAS - 1, PACK_BIAS):
            assert unpack(h * (1 << 16) + outside + PACK_BIAS) != (h, outside)


@pytest.mark.parametrize(("w_range", "terms"), [((-128, 127), 1), ((-127, 127), 2)])
def test_accumulated_sums_at_the_worst_cases(w_range: tuple[int, int], terms: int) -> None:
    """n packed products summed in P (one bias) unpack exactly up to `max_packed_terms`;
    the worst cases are the extreme products, all equal (any other sum lies between)."""
    assert max_packed_terms((-128, 127), w_range) == terms
    corners = [(x, w) for x in (-128, 127) for w in w_range]
    for n in (terms, terms + 1):
        failed = False
        for x, w_lo in corners:
            for w_hi in w_range:
                p = n * pack(w_hi, w_lo) * x + PACK_BIAS
                ok = unpack(p) == (n * w_hi * x, n * w_lo * x)
                failed |= not ok
                if n == terms:
                    assert ok, (n, x, w_hi, w_lo)
        assert failed == (n > terms)


def test_accumulated_random_sums() -> None:
    """Random sums of `max_packed_terms` products (symmetric weights) unpack exactly."""
    rng = np.random.default_rng(17)
    n = max_packed_terms((-128, 127), (-127, 127))
    x = rng.integers(-128, 128, (200_000, n))
    w_hi, w_lo = (rng.integers(-127, 128, (200_000, n)) for _ in range(2))
    p = (pack(w_hi, w_lo) * x).sum(axis=1) + PACK_BIAS
    hi, lo = unpack(p)
    assert (hi == (w_hi * x).sum(axis=1)).all() and (lo == (w_lo * x).sum(axis=1)).all()
