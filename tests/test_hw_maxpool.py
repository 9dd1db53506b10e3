"""Quick Amaranth-simulator check of hw.maxpool.MaxPool against ref_maxpool."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.maxpool import MaxPool
from hw.spec.config import HwConfig
from tests.reference import ref_maxpool

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=8,
               line_buffer_depth=32)


def _run(x: np.ndarray, stride2: bool, vertical: bool = False) -> list[int]:
    dut = MaxPool(CFG)
    h, w, c = x.shape
    want = ref_maxpool(x, stride2, vertical).size
    got: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.width, w)
        ctx.set(dut.height, h)
        ctx.set(dut.channels, c)
        ctx.set(dut.stride2, int(stride2))
        ctx.set(dut.vertical, int(vertical))
        pixels = [int(v) for v in x.reshape(-1)]
        for _ in range(4 * (h + 1) * (w + 1) * c):
            ctx.set(dut.i.valid, int(bool(pixels)))
            if pixels:
                ctx.set(dut.i.payload, pixels[0])
            _, _, ready, valid, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            if pixels and ready:
                pixels.pop(0)
            if valid:
                got.append(payload)
            if len(got) == want and not pixels:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize(("stride2", "vertical"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 4, 2), (5, 3, 1), (2, 6, 3), (3, 4, 8)])
def test_maxpool_matches_reference(shape: tuple[int, int, int], stride2: bool,
                                   vertical: bool) -> None:
    x = np.random.default_rng(sum(shape)).integers(-128, 128, shape)
    assert _run(x, stride2, vertical) == ref_maxpool(x, stride2, vertical).reshape(-1).tolist()


def test_ref_maxpool_vertical_pools_rows_only() -> None:
    x = np.arange(3 * 2 * 1).reshape(3, 2, 1)          # rows [0 1] [2 3] [4 5]
    assert ref_maxpool(x, True, True)[:, :, 0].tolist() == [[2, 3]]
