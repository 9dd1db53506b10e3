"""PayloadReader (hw/link.py) on a FrameReceiver's buffer: the payload leaves in order,
whole, under random backpressure; a new `start` drops the rest of the old payload; the
first byte comes 5 cycles after `start` and then one per cycle."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.link import FrameReceiver, PayloadReader
from hw.spec.protocol import MAX_PAYLOAD, Op, encode_frame


class _Dut:
    def __init__(self) -> None:
        self.m = m = Module()
        m.submodules.rcv = self.rcv = FrameReceiver(MAX_PAYLOAD, timeout_cycles=1000)
        m.submodules.rdr = self.rdr = PayloadReader(MAX_PAYLOAD)
        m.d.comb += [self.rcv.rd_addr.eq(self.rdr.rd_addr), self.rdr.rd_data.eq(self.rcv.rd_data)]


def _run(payload: bytes, seed: int, stall: float, restart_after: int | None = None
         ) -> tuple[list[int], int, int]:
    """Received bytes, cycles from `start` to the first byte, cycles from the first byte
    to the last. With `restart_after`, `start` is pulsed again after that many bytes and
    the bytes are collected from the restart on."""
    dut = _Dut()
    rng = random.Random(seed)
    got: list[int] = []
    first = last = 0

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        nonlocal first, last, got, restart_after
        for byte in encode_frame(Op.ECHO, payload):
            ctx.set(dut.rcv.rx.valid, 1)
            ctx.set(dut.rcv.rx.payload, byte)
            await ctx.tick().until(dut.rcv.rx.ready)
        ctx.set(dut.rcv.rx.valid, 0)
        await ctx.tick().until(dut.rcv.frame.valid)
        ctx.set(dut.rdr.length, len(payload))
        ctx.set(dut.rdr.start, 1)
        await ctx.tick()
        ctx.set(dut.rdr.start, 0)
        cycle = 0
        while len(got) < len(payload) and cycle < 20 * len(payload) + 50:
            if restart_after is not None and len(got) == restart_after:
                restart_after = None
                got = []
                ctx.set(dut.rdr.start, 1)
                await ctx.tick()
                ctx.set(dut.rdr.start, 0)
                cycle = 0
                continue
            ready = rng.random() >= stall
            ctx.set(dut.rdr.o.ready, int(ready))
            _, _, valid, data = await ctx.tick().sample(dut.rdr.o.valid, dut.rdr.o.payload)
            cycle += 1
            if valid and ready:
                if not got:
                    first = cycle
                got.append(data)
                last = cycle

    sim = Simulator(dut.m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = list(payload)
    diff = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    assert got == want, f"{len(got)} of {len(want)} bytes; first difference at {diff}"
    return got, first, last - first


@pytest.mark.parametrize(("seed", "stall", "n"), [(1, 0.0, 1), (2, 0.0, 300), (3, 0.3, 300),
                                                  (4, 0.8, 100), (5, 0.5, MAX_PAYLOAD)])
def test_payload_reader_in_order_under_backpressure(seed, stall, n):
    rng = random.Random(seed)
    _run(bytes(rng.randrange(256) for _ in range(n)), seed, stall)


def test_payload_reader_latency_and_throughput():
    _, first, span = _run(bytes(range(200)), 0, 0.0)
    assert first == 5, f"first byte {first} cycles after start, documented 5"
    assert span == 199, f"200 bytes took {span + 1} cycles, expected one per cycle"


@pytest.mark.parametrize("after", [0, 3, 40])
def test_payload_reader_restart_drops_old_bytes(after):
    _run(bytes(random.Random(after).randrange(256) for _ in range(120)), after, 0.2,
         restart_after=after)
