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


def _run(x: np.ndarray, stride2: bool, vertical: bool = False, lanes: int = 1) -> list[int]:
    """`x` through a MaxPool of `lanes` lanes (channels padded with random values to a
    multiple of `lanes`; the outputs of padding channels are dropped)."""
    dut = MaxPool(CFG, lanes)
    h, w, c = x.shape
    cl = -(-c // lanes)
    pad = np.random.default_rng(c).integers(-128, 128, (h, w, cl * lanes - c))
    xl = np.concatenate([x, pad], axis=2).reshape(h, w, cl, lanes)
    want = ref_maxpool(x, stride2, vertical).size // c * cl
    got: list[list[int]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.width, w)
        ctx.set(dut.height, h)
        ctx.set(dut.channels, cl)
        ctx.set(dut.stride2, int(stride2))
        ctx.set(dut.vertical, int(vertical))
        pixels = [[int(v) for v in t] for t in xl.reshape(-1, lanes)]
        for _ in range(4 * (h + 1) * (w + 1) * cl):
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
    return [v for n, t in enumerate(got) for k, v in enumerate(t) if n % cl * lanes + k < c]


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize(("stride2", "vertical"), [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 4, 2), (5, 3, 1), (2, 6, 3), (3, 4, 8),
                                   (3, 5, 4)])
def test_maxpool_matches_reference(shape: tuple[int, int, int], stride2: bool,
                                   vertical: bool, lanes: int) -> None:
    x = np.random.default_rng(sum(shape)).integers(-128, 128, shape)
    assert (_run(x, stride2, vertical, lanes)
            == ref_maxpool(x, stride2, vertical).reshape(-1).tolist())


def test_ref_maxpool_vertical_pools_rows_only() -> None:
    x = np.arange(3 * 2 * 1).reshape(3, 2, 1)          # rows [0 1] [2 3] [4 5]
    assert ref_maxpool(x, True, True)[:, :, 0].tolist() == [[2, 3]]
