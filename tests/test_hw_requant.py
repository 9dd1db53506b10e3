"""Quick Amaranth-simulator check of hw.requant.Requantizer against ref_requant."""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from hw.requant import REQUANT_LATENCY, Requantizer
from hw.spec.config import DEFAULT
from tests.reference import ref_requant


def test_requant_matches_reference() -> None:
    cfg = DEFAULT
    rng = random.Random(0)
    amax = (1 << (cfg.acc_bits - 1)) - 1
    items = [(amax, amax, 0, 0, 0), (-amax - 1, -amax - 1, 0, 1, 1), (6, 0, 2, 0, 0),
             (-6, 0, 2, 0, 0), (-1, 0, 0, 1, 0), (-1000, 0, cfg.max_shift, 1, 1)]
    items += [(rng.randrange(-amax, amax), rng.randrange(-999, 999),
               rng.randrange(cfg.max_shift + 1), rng.randrange(2), rng.randrange(2))
              for _ in range(300)]
    dut = Requantizer(cfg)
    got: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.o.ready, 1)
        for acc, bias, shift, leaky, head in items:
            ctx.set(dut.i.payload, {"acc": acc, "bias": bias, "shift": shift,
                                    "leaky": leaky, "head": head})
            ctx.set(dut.i.valid, 1)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload)
        ctx.set(dut.i.valid, 0)
        for _ in range(REQUANT_LATENCY):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [ref_requant(*it, cfg=cfg) for it in items]
