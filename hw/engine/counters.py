"""Counter helpers of the layer engine's units (logic inside a unit's `elaborate`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value

__all__ = ["end_flag", "map_counter"]


def map_counter(m: Module, clear: Value, fire: Value, c: Value, w: Value, h: Value, *,
                name: str) -> Signal:
    """Counts transfers over an H x W x C map (C fastest); returns "this one is the last".

    `c`, `w`, `h` are the last indices (C - 1, W - 1, H - 1), so only equalities remain."""
    cc = Signal.like(c, name=f"{name}_c")
    cx = Signal.like(w, name=f"{name}_x")
    cy = Signal.like(h, name=f"{name}_y")
    last = Signal(name=f"{name}_last")
    m.d.comb += last.eq(fire & (cc == c) & (cx == w) & (cy == h))
    with m.If(clear):
        m.d.sync += [cc.eq(0), cx.eq(0), cy.eq(0)]
    with m.Elif(fire):
        m.d.sync += cc.eq(cc + 1)
        with m.If(cc == c):
            m.d.sync += [cc.eq(0), cx.eq(cx + 1)]
            with m.If(cx == w):
                m.d.sync += [cx.eq(0), cy.eq(cy + 1)]
                with m.If(cy == h):
                    m.d.sync += cy.eq(0)
    return last


def end_flag(m: Module, step: Value, base: Value, size: int, limit: Value, *,
             name: str) -> Signal:
    """A register equal to `base + size >= limit` ("this block is the last"), for a `base`
    that on `step` moves up by `size`, or back to 0 when the flag is set, and otherwise
    rests (at 0 between pixels and passes, where the flag follows `limit`): no
    add-and-compare chain between `base` and the logic that uses the flag."""
    flag = Signal(name=name)
    with m.If(step):
        m.d.sync += flag.eq(Mux(flag, limit <= size, base + 2 * size >= limit))
    with m.Elif(base == 0):
        m.d.sync += flag.eq(limit <= size)
    return flag
