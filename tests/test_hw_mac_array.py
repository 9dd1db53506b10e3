"""Quick Amaranth-simulator check of hw.mac_array.MacArray against ref_mac."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.mac_array import MacArray
from hw.spec.config import HwConfig
from tests.reference import ref_mac


@pytest.mark.parametrize(("rows", "cols"), [(2, 3), (4, 4)])
def test_mac_array_matches_reference(rows: int, cols: int) -> None:
    cfg = HwConfig(array_rows=rows, array_cols=cols)
    rng = np.random.default_rng(rows * 10 + cols)
    groups = [(rng.integers(-128, 128, (n, cols)), rng.integers(-127, 128, (n, rows, cols)))
              for n in rng.integers(1, 6, 12)]
    dut = MacArray(cfg)
    got: list[list[int]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.o.ready, 1)
        vectors = [(x[k].tolist(), w[k].tolist(), int(k == len(x) - 1))
                   for x, w in groups for k in range(len(x))]
        for step in range(len(vectors) + dut.latency + 1):
            if step < len(vectors):
                x, w, last = vectors[step]
                ctx.set(dut.i.payload, {"x": x, "w": w, "last": last})
            ctx.set(dut.i.valid, int(step < len(vectors)))
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append([int(v) for v in payload])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [ref_mac(x, w).tolist() for x, w in groups]

