"""Two int8 products in one DSP48E1 multiply: the packing contract.

Two weights ``w_hi``, ``w_lo`` that multiply the same activation ``x`` share one DSP48E1
(the MAC array's rows 2p and 2p + 1, ``HwConfig.mac_pack = 2``). All three are signed
8-bit integers (the full range [-128, 127], although the project's weights are symmetric).

DSP48E1 data path (UG479) and where each value goes::

    A[24:0] = w_hi * 2**PACK_SHIFT       A port, 25 bits into the pre-adder (w_hi << 16)
    D       = w_lo                       D port, 25 bits signed
    AD      = D + A = pack(w_hi, w_lo)   pre-adder, 25 bits signed (no overflow, below)
    B       = x                          B port, 18 bits signed
    M       = AD * B                     43 bits signed
    P       = M + C,  C = PACK_BIAS      post-adder, 48 bits (C is the constant 2**15)

Fields of P (`unpack`): ``lo = P[15:0] - 2**15`` (bit 15 inverted, read as signed 16 bits)
and ``hi = P[31:16]`` (signed 16 bits): both are wires, no fabric arithmetic. The added
constant is the sign-borrow correction: without it (`unpack_borrow`), a negative low
product borrows one from the high field, ``lo = P[15:0]`` signed and
``hi = P[31:16] + P[15]``.

Widths (all int8 operands): |pack| <= 128 * 2**16 + 128 < 2**24, so AD fits 25 signed
bits; each product lies in [-16256, 16384], inside a signed 16-bit field; |P| < 2**31.

Why it is exact (the statement `tests/test_dsppack.py` checks exhaustively over all
2**24 triples): P = hi * 2**16 + (lo + 2**15) with hi = w_hi * x and lo = w_lo * x. When
0 <= lo + 2**15 < 2**16, i.e. lo in [-2**15, 2**15), floor division by 2**16 gives hi
and the remainder gives lo + 2**15. The same holds for a *sum* of n packed products
accumulated in P (the bias added once): the fields stay separable while the low sum stays
in [-2**15, 2**15) (`max_packed_terms`: 1 product for the full int8 range, since
2 * (-128)**2 = 2**15; 2 for symmetric weights in [-127, 127]). The gateware therefore
separates the fields after every product and adds them in fabric.

Part of the contract layer (`hw.spec`): plain Python and NumPy.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "B_BITS",
    "FIELD_BITS",
    "PACK_BIAS",
    "PACK_SHIFT",
    "PREADD_BITS",
    "max_packed_terms",
    "pack",
    "packed_product",
    "unpack",
    "unpack_borrow",
]

#: Offset of the high weight (and of the high product field) in the packed operand.
PACK_SHIFT = 16
#: Width of each signed product field in P.
FIELD_BITS = 16
#: Constant on the DSP's C port: moves the low field's range to [0, 2**16).
PACK_BIAS = 1 << (FIELD_BITS - 1)
#: DSP48E1 pre-adder output (multiplier's first operand) and B port widths.
PREADD_BITS = 25
B_BITS = 18


def pack(w_hi: Any, w_lo: Any) -> Any:
    """The pre-adder's output: ``w_hi * 2**16 + w_lo`` (25 bits signed for int8 inputs)."""
    return w_hi * (1 << PACK_SHIFT) + w_lo


def packed_product(x: Any, w_hi: Any, w_lo: Any) -> Any:
    """The DSP's P output: ``pack(w_hi, w_lo) * x + PACK_BIAS``."""
    return pack(w_hi, w_lo) * x + PACK_BIAS


def unpack(p: Any) -> tuple[Any, Any]:
    """(hi, lo) of a P value holding ``hi * 2**16 + lo + PACK_BIAS``, lo in [-2**15, 2**15).

    hi = P >> 16 (arithmetic; the hardware reads P[31:16] as signed, the same while
    hi fits 16 bits), lo = (P mod 2**16) - 2**15 (P[15:0] with bit 15 inverted).
    """
    mask = (1 << FIELD_BITS) - 1
    return p >> FIELD_BITS, (p & mask) - PACK_BIAS


def unpack_borrow(p: Any) -> tuple[Any, Any]:
    """(hi, lo) of P = ``hi * 2**16 + lo`` without the bias (the brief's variant):
    lo = P[15:0] as signed 16 bits, hi = P[31:16] + P[15] (the low field's borrow)."""
    mask = (1 << FIELD_BITS) - 1
    low = p & mask
    borrow = (low >> (FIELD_BITS - 1)) & 1
    return (p >> FIELD_BITS) + borrow, low - borrow * (1 << FIELD_BITS)


def max_packed_terms(x_range: tuple[int, int], w_range: tuple[int, int]) -> int:
    """Most products whose packed sum (accumulated in P) still unpacks exactly.

    The low field of a sum of n products is exact while the sum lies in
    [-2**15, 2**15): n * max(lo) <= 2**15 - 1 and n * min(lo) >= -2**15.
    """
    corners = [x * w for x in x_range for w in w_range]
    hi, lo = max(corners), min(corners)
    n_pos = (PACK_BIAS - 1) // hi if hi > 0 else 1 << 62
    n_neg = PACK_BIAS // -lo if lo < 0 else 1 << 62
    return min(n_pos, n_neg)
