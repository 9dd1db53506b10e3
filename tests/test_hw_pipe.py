"""StreamRegister (hw/_pipe.py): every value passes once, in order, under random idle
input and random output backpressure; at most one cycle of latency; full throughput.
delay_taps: every tap is its value that many enabled edges ago, under a random enable."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from hw._pipe import StreamRegister, delay_taps


def _run(seed: int, idle: float, stall: float, n: int = 400) -> tuple[list[int], int]:
    dut = StreamRegister(signed(8))
    rng = random.Random(seed)
    data = [rng.randrange(-128, 128) for _ in range(n)]
    got: list[int] = []
    cycles = 0

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        nonlocal cycles
        pos = 0
        while len(got) < n and cycles < 20 * n:
            show = pos < n and rng.random() >= idle
            ctx.set(dut.i.valid, int(show))
            if show:
                ctx.set(dut.i.payload, data[pos])
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, i_ready, o_valid, o_ready, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            cycles += 1
            if show and i_ready:
                pos += 1
            if o_valid and o_ready:
                got.append(o_payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    diff = next((k for k, (a, b) in enumerate(zip(got, data, strict=False)) if a != b), None)
    assert got == data, f"{len(got)} of {n} values; first difference at {diff}"
    return got, cycles


@pytest.mark.parametrize(("seed", "idle", "stall"), [(1, 0.0, 0.0), (2, 0.3, 0.0), (3, 0.0, 0.3),
                                                      (4, 0.4, 0.4), (5, 0.1, 0.7)])
def test_stream_register_passes_everything_in_order(seed, idle, stall):
    _run(seed, idle, stall)


def test_stream_register_full_throughput():
    _, cycles = _run(7, 0.0, 0.0, n=200)
    assert cycles <= 200 + 2        # one transfer per cycle plus the register's latency


def test_delay_taps_delay_each_value_by_enabled_edges():
    shapes = [signed(8), unsigned(3), signed(5), signed(8), unsigned(1)]
    delays = [3, 0, 5, 3, 1]                 # ties, a zero delay, different widths
    values = [Signal(s, name=f"v{i}") for i, s in enumerate(shapes)]
    en = Signal()
    m = Module()
    taps = delay_taps(m, values, delays, en, name="t")
    assert [len(t) for t in taps] == [d + 1 for d in delays]
    assert all(t.shape() == s for ts, s in zip(taps, shapes, strict=True) for t in ts)
    rng = random.Random(11)
    hist = [[0] * d for d in delays]         # values at the last enabled edges, newest first
    checked = [0]

    def draw(s) -> int:  # type: ignore[no-untyped-def]
        lo = -(1 << (s.width - 1)) if s.signed else 0
        return rng.randrange(lo, lo + (1 << s.width))

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for _ in range(300):
            now = [draw(s) for s in shapes]
            for v, x in zip(values, now, strict=True):
                ctx.set(v, x)
            step = rng.random() < 0.7
            ctx.set(en, int(step))
            for i, ts in enumerate(taps):
                assert [ctx.get(t) for t in ts] == [now[i], *hist[i]], (i, hist[i])
                checked[0] += 1
            await ctx.tick()
            if step:
                for h, x in zip(hist, now, strict=True):
                    h[:] = [x, *h][:len(h)]

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert checked[0] == 300 * len(values)


def test_delay_taps_refuses_mismatched_delays():
    for delays in ([1, 2], [-1]):
        m = Module()
        with pytest.raises(ValueError):
            delay_taps(m, [Signal(8)], delays, Signal(), name="t")
        m._MustUse__silence = True           # never elaborated
