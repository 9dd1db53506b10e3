"""Small pipeline helpers shared by the gateware blocks."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, ShapeLike, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FrameWalk", "StreamRegister", "delay", "delay_taps", "frame_walk"]


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


def delay_taps(m: Module, values: list[Value], delays: list[int], en: Value, *,
               name: str) -> list[list[Value]]:
    """``taps[i][k]``: ``values[i]`` delayed by ``k`` enabled clock edges, for ``k`` from 0
    to ``delays[i]``.

    The same flip-flops as one `delay` line per value, kept as one tapered shift register:
    stage k holds every value that is delayed at least k edges, so a simulator moves a few
    wide words per stage instead of one signal per value and stage. No reset (shift-register
    LUTs in synthesis, as `delay`)."""
    if len(values) != len(delays) or min(delays, default=0) < 0:
        raise ValueError("one delay (>= 0) per value")
    order = sorted(range(len(values)), key=lambda i: -delays[i])    # longest first
    widths = [len(values[i]) for i in order]
    offsets = [sum(widths[:j]) for j in range(len(order))]
    taps: list[list[Value]] = [[v] for v in values]
    stage: Value = Cat(*(values[i] for i in order))
    for k in range(1, max(delays, default=0) + 1):
        n = sum(1 for i in order if delays[i] >= k)          # a prefix of `order`
        reg = Signal(offsets[n - 1] + widths[n - 1], name=f"{name}_d{k}", reset_less=True)
        with m.If(en):
            m.d.sync += reg.eq(stage[:len(reg)])
        for j, i in enumerate(order[:n]):
            bits = reg[offsets[j]:offsets[j] + widths[j]]
            taps[i].append(bits.as_signed() if values[i].shape().signed else bits)
        stage = reg
    return taps


@dataclass(frozen=True)
class FrameWalk:
    """The position of a walk over an H x W x C map (C fastest): row `y`, column `x`,
    channel `c`, and `a` = x * C + c (a row store's address); `pad_col` / `pad`: the
    position is in the extra padding column / column or row."""

    y: Signal
    x: Signal
    c: Signal
    a: Signal
    pad_col: Value
    pad: Value


def frame_walk(m: Module, max_width: int, max_channels: int, depth: int, width: Value,
               height: Value, channels: Value, padded: Value, two: Value | None = None,
               skip_top_pad: Value | int = 0) -> tuple[FrameWalk, Signal]:
    """A walk over the map (the window generator's and the max pool's), and the signal
    that advances it by one position on the next edge (the caller drives it). With
    `padded` the walk has an extra column x = W and row y = H (no input there); after the
    last position it starts again at (0, 0, 0).

    `two` (optional): the step advances two channel positions (``channels >= 2``, and
    not past the row's last one; the walk compares with ``channels`` registered, so
    `channels` must hold one cycle before such a step). `skip_top_pad` (while 1): in a
    padded walk, row 0 has no padding column (the walk goes from (0, W - 1) to (1, 0))."""
    y = Signal(range(max_width + 1), name="y")
    x = Signal(range(max_width + 1), name="x")
    c = Signal(range(max_channels), name="c")
    a = Signal(range(depth + 1), name="a")
    step = Signal(name="walk_step")
    x_end = Mux(padded & ~(skip_top_pad & (y == 0)), width, width - 1)
    y_end = Mux(padded, height, height - 1)
    pad_col = x == width
    pair: Value | int = 0
    c_wrap = c == channels - 1
    c_next: Value | int = 0
    if two is not None:
        # Two steps: from C - 2 to 0, or from C - 1 to 1, of the next column. The compares
        # (also of a one-position step) are with registered C - 1 and C - 2 (equality
        # only, off the ports' arithmetic).
        pair = two
        ch_m1 = Signal.like(c, name="walk_ch_m1")
        ch_m2 = Signal.like(c, name="walk_ch_m2")
        m.d.sync += [ch_m1.eq(channels - 1), ch_m2.eq(channels - 2)]
        c_wrap = (c == ch_m1) | (two & (c == ch_m2))
        c_next = two & (c == ch_m1)
    with m.If(step):
        # (both sums computed apart from `two`, which only selects: it arrives late)
        m.d.sync += [c.eq(Mux(pair, c + 2, c + 1)), a.eq(Mux(pair, a + 2, a + 1))]
        with m.If(c_wrap):
            m.d.sync += [c.eq(c_next), x.eq(x + 1)]
            with m.If(x == x_end):
                m.d.sync += [x.eq(0), a.eq(0), y.eq(y + 1)]
                with m.If(y == y_end):
                    m.d.sync += y.eq(0)
    return FrameWalk(y, x, c, a, pad_col, pad_col | (y == height)), step


class StreamRegister(wiring.Component):
    """A registered stream stage (skid buffer): ``o.valid``, ``o.payload`` and ``i.ready``
    all come from flip-flops, so no combinational path crosses it in either direction.

    Latency 1 cycle; full throughput (one transfer per cycle); backpressure without loss:
    a transfer accepted while ``o`` stalls waits in a second register.
    """

    def __init__(self, shape: ShapeLike) -> None:
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        skid = Signal.like(self.o.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        take = self.i.valid & self.i.ready
        with m.If(~self.o.valid | self.o.ready):
            # the output register empties (or was empty): refill from the skid or the input
            m.d.sync += [self.o.valid.eq(skid_valid | take),
                         self.o.payload.eq(Mux(skid_valid, skid, self.i.payload)),
                         skid_valid.eq(0)]
        with m.Elif(take):
            # output stalled: park the new transfer
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
