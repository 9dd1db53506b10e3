"""Quick Amaranth-simulator check of hw.linebuf.WindowGen against ref_windows."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.linebuf import WindowGen
from hw.spec.config import HwConfig
from tests.reference import ref_windows

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=8,
               line_buffer_depth=32)


def _run(frames: list[tuple[np.ndarray, int]]) -> list[list[list[int]]]:
    dut = WindowGen(CFG)
    results: list[list[list[int]]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.o.ready, 1)
        for x, k in frames:
            h, w, c = x.shape
            ctx.set(dut.width, w)
            ctx.set(dut.height, h)
            ctx.set(dut.channels, c)
            ctx.set(dut.k3, int(k == 3))
            want = h * w * c
            got: list[list[int]] = []
            pixels = [int(v) for v in x.reshape(-1)]
            while len(got) < want:
                if pixels:
                    ctx.set(dut.i.payload, pixels[0])
                    ctx.set(dut.i.valid, 1)
                else:
                    ctx.set(dut.i.valid, 0)
                _, _, ready, valid, payload = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.payload)
                if pixels and ready:
                    pixels.pop(0)
                if valid:
                    got.append([int(v) for v in payload])
            ctx.set(dut.i.valid, 0)
            results.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 2), (2, 5, 1), (4, 1, 3), (3, 4, 8)])
def test_windows_3x3_and_1x1(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    frames = [(rng.integers(-128, 128, shape), 3), (rng.integers(-128, 128, shape), 1)]
    for (x, k), got in zip(frames, _run(frames), strict=True):
        assert got == ref_windows(x, k).reshape(-1, 9).tolist()
