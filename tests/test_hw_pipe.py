"""StreamRegister (hw/_pipe.py): every value passes once, in order, under random idle
input and random output backpressure; at most one cycle of latency; full throughput."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import signed
from amaranth.sim import Simulator

from hw._pipe import StreamRegister


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
