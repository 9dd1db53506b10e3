"""Clock generators for the board builds: integer MMCME2 (Artix-7) and EHXPLLL (ECP5)
settings that make the engine's clock from a board's oscillator, checked against each
part's documented limits (`hw.build` instantiates them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar

from boards import Board

__all__ = ["CLOCK_TOLERANCE", "ClockError", "EcpPll", "Mmcm", "clock_plan", "ecp5_pll",
           "mmcm_plan"]

#: Relative frequency error accepted from a PLL/MMCM (a crystal's tolerance).
CLOCK_TOLERANCE = 1e-4


class ClockError(ValueError):
    """The engine clock cannot be made from the board oscillator."""


@dataclass(frozen=True)
class Mmcm:
    """MMCME2_BASE settings: f_out = f_in * mult / (divclk * div)."""
    f_in: int
    divclk: int
    mult: int
    div: int

    @property
    def f_vco(self) -> Fraction:
        return Fraction(self.f_in * self.mult, self.divclk)

    @property
    def f_out(self) -> Fraction:
        return self.f_vco / self.div


@dataclass(frozen=True)
class EcpPll:
    """EHXPLLL settings, feedback from CLKOP: f_out = f_in * fb_div / ref_div."""
    f_in: int
    ref_div: int
    fb_div: int
    op_div: int

    @property
    def f_vco(self) -> Fraction:
        return self.f_out * self.op_div

    @property
    def f_out(self) -> Fraction:
        return Fraction(self.f_in * self.fb_div, self.ref_div)


Plan = TypeVar("Plan", "Mmcm", "EcpPll")

# Artix-7 -1/-1L limits (DS181): input 10-800 MHz, PFD 10-450 MHz, VCO 600-1200 MHz,
# global clock buffer 464 MHz; DIVCLK_DIVIDE 1-106, CLKFBOUT_MULT 2-64, CLKOUT1_DIVIDE 1-128.
_XC7 = dict(f_in=(10e6, 800e6), pfd=(10e6, 450e6), vco=(600e6, 1200e6), out=(4.69e6, 464e6))


def _best_plan(f_in: int, f_out: int, tolerance: float, limits: dict, part: str,
               candidates: Iterable[Plan], prefer: Callable[[Plan], float]) -> Plan:
    """The candidate setting whose output is nearest `f_out` (ties: the smallest
    `prefer`), checked against the part's input and output `limits`; `ClockError`, naming
    the nearest frequency, when none is within `tolerance`."""
    lo, hi = limits["f_in"]
    if not lo <= f_in <= hi:
        raise ClockError(f"{part} input {f_in / 1e6:g} MHz is outside {lo / 1e6:g}-"
                         f"{hi / 1e6:g} MHz")
    lo, hi = limits["out"]
    if not lo <= f_out <= hi:
        raise ClockError(f"cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz: {part} "
                         f"gives {lo / 1e6:g}-{hi / 1e6:g} MHz")
    best = min(((abs(float(c.f_out) - f_out) / f_out, prefer(c), c) for c in candidates),
               key=lambda t: t[:2], default=None)
    if best is None or best[0] > tolerance:
        near = "" if best is None else f" (nearest {float(best[2].f_out) / 1e6:.6f} MHz)"
        raise ClockError(f"cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz with "
                         f"{part} within {tolerance * 1e6:g} ppm{near}")
    return best[2]


def mmcm_plan(f_in: int, f_out: int, tolerance: float = CLOCK_TOLERANCE) -> Mmcm:
    """Integer MMCME2 settings making `f_out` from `f_in` (Artix-7 -1 limits).

    Picks the smallest frequency error, then the highest VCO (least jitter). Raises
    `ClockError` when no setting is within `tolerance`.
    """
    def candidates() -> Iterator[Mmcm]:
        for divclk in range(1, 107):
            pfd = f_in / divclk
            if pfd < _XC7["pfd"][0]:
                break
            if pfd > _XC7["pfd"][1]:
                continue
            for mult in range(2, 65):
                vco = pfd * mult
                if _XC7["vco"][0] <= vco <= _XC7["vco"][1]:
                    yield Mmcm(f_in, divclk, mult, max(1, min(128, round(vco / f_out))))
    return _best_plan(f_in, f_out, tolerance, _XC7, "an Artix-7 MMCM", candidates(),
                      lambda m: -float(m.f_vco))


# ECP5 EHXPLLL limits (Lattice TN1263): input 8-400 MHz, PFD 3.125-400 MHz,
# VCO 400-800 MHz, output 3.125-400 MHz; CLKI_DIV 1-128, CLKFB_DIV 1-80, CLKOP_DIV 1-128.
_ECP5 = dict(f_in=(8e6, 400e6), pfd=(3.125e6, 400e6), vco=(400e6, 800e6), out=(3.125e6, 400e6))
_ECP5_VCO_MID = 600e6


def ecp5_pll(f_in: int, f_out: int, tolerance: float = CLOCK_TOLERANCE) -> EcpPll:
    """EHXPLLL settings making `f_out` from `f_in`: the smallest frequency error, then the
    VCO nearest the middle of its range; `ClockError` when it cannot be made."""
    def candidates() -> Iterator[EcpPll]:
        for ref_div in range(1, 129):
            pfd = f_in / ref_div
            if pfd < _ECP5["pfd"][0]:
                break
            if pfd > _ECP5["pfd"][1]:
                continue
            for fb_div in range(1, 81):
                out = pfd * fb_div
                if out > _ECP5["out"][1]:
                    break
                op_div = max(1, min(128, round(_ECP5_VCO_MID / out)))
                if _ECP5["vco"][0] <= out * op_div <= _ECP5["vco"][1]:
                    yield EcpPll(f_in, ref_div, fb_div, op_div)
    return _best_plan(f_in, f_out, tolerance, _ECP5, "an ECP5 EHXPLLL", candidates(),
                      lambda p: abs(float(p.f_vco) - _ECP5_VCO_MID))


def clock_plan(board: Board, f_out: int) -> Mmcm | EcpPll | None:
    """The board's clock generator for `f_out`, or None when the oscillator is used as is."""
    if f_out == board.clock_hz:
        return None
    return mmcm_plan(board.clock_hz, f_out) if board.family == "xc7" else \
        ecp5_pll(board.clock_hz, f_out)
