"""Small pipeline helpers shared by the gateware blocks."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, Value

__all__ = ["delay"]


def delay(m: Module, value: Value, cycles: int, en: Value, *, name: str,
          reset_less: bool = True) -> Value:
    """`value` delayed by `cycles` enabled clock edges (a shift register that moves on `en`).

    Data delay lines have no reset, so synthesis can map them to shift-register LUTs.
    """
    out = value
    for k in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{k + 1}", reset_less=reset_less)
        with m.If(en):
            m.d.sync += reg.eq(out)
        out = reg
    return out
