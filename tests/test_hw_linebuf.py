"""Quick Amaranth-simulator check of hw.linebuf.WindowGen against ref_windows: one value a
transfer, two-value transfers anywhere (stored two a cycle in row 0 of a 3x3 frame, else
split), with idle input cycles and output backpressure."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.linebuf import WindowGen
from hw.spec.config import HwConfig
from tests.reference import expand_windows, ref_windows

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=8,
               line_buffer_depth=32)


def _transfers(x: np.ndarray, pair_p: float, rng: random.Random) -> list[list[int]]:
    """The map's values as transfers of one value, or two with probability `pair_p`."""
    vals = [int(v) for v in x.reshape(-1)]
    out: list[list[int]] = []
    while vals:
        n = 2 if len(vals) > 1 and rng.random() < pair_p else 1
        out.append(vals[:n])
        vals = vals[n:]
    return out


def _run(frames: list[tuple[np.ndarray, int]], pair_p: float = 0.0, idle: float = 0.0,
         stall: float = 0.0, seed: int = 0) -> tuple[list[list[list[int]]], list[int]]:
    """Windows of each frame and the cycles each took (its first transfer to its last
    window)."""
    dut = WindowGen(CFG)
    rng = random.Random(seed)
    results: list[list[list[int]]] = []
    cycles: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for x, k in frames:
            h, w, c = x.shape
            ctx.set(dut.width, w)
            ctx.set(dut.height, h)
            ctx.set(dut.channels, c)
            ctx.set(dut.k3, int(k == 3))
            ctx.set(dut.i.valid, 0)
            await ctx.tick()                  # the ports hold a cycle before the frame
            want = h * w * c
            got: list[dict[str, object]] = []
            todo = _transfers(x, pair_p, rng)
            n = 0
            while len(expand_windows(got)) < want:
                offer = bool(todo) and rng.random() >= idle
                if offer:
                    t = todo[0]
                    ctx.set(dut.i.payload, {"data": [t[0], t[-1]], "two": len(t) == 2})
                ctx.set(dut.i.valid, offer)
                ctx.set(dut.o.ready, rng.random() >= stall)
                _, _, ready, valid, oready, payload = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
                n += 1
                if offer and ready:
                    todo.pop(0)
                if valid and oready:
                    got.append({"taps": list(payload.taps), "two": payload.two})
            assert not todo
            ctx.set(dut.i.valid, 0)
            results.append(expand_windows(got))
            cycles.append(n)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results, cycles


SHAPES = [(1, 1, 1), (3, 4, 2), (2, 5, 1), (4, 1, 3), (3, 4, 8), (3, 3, 3), (2, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES)
def test_windows_3x3_and_1x1(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    frames = [(rng.integers(-128, 128, shape), 3), (rng.integers(-128, 128, shape), 1)]
    for (x, k), got in zip(frames, _run(frames)[0], strict=True):
        assert got == ref_windows(x, k).reshape(-1, 9).tolist()


@pytest.mark.parametrize("shape", SHAPES)
def test_two_value_transfers_with_stalls(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(7 + sum(shape))
    frames = [(rng.integers(-128, 128, shape), k) for k in (3, 1, 3)]
    for pair_p in (0.5, 1.0):
        got, _ = _run(frames, pair_p, idle=0.25, stall=0.25, seed=sum(shape))
        for (x, k), g in zip(frames, got, strict=True):
            assert g == ref_windows(x, k).reshape(-1, 9).tolist()


def test_row0_two_a_cycle() -> None:
    """Row 0 of a 3x3 frame sent in pairs takes W * C / 2 cycles instead of W * C: the
    frame's walk is W * C / 2 steps shorter (no stalls)."""
    x = np.random.default_rng(3).integers(-128, 128, (4, 6, 4))
    (single,), (n1,) = _run([(x, 3)], 0.0)
    (paired,), (n2,) = _run([(x, 3)], 1.0)
    want = ref_windows(x, 3).reshape(-1, 9).tolist()
    assert single == want and paired == want
    assert n1 - n2 == 6 * 4 // 2


def test_1x1_two_a_cycle() -> None:
    """A 1x1 frame of an even C sent in pairs (`pairs_1x1`: C = 4 lanes here) takes
    H * W * C / 2 steps; with an odd C each pixel's last channel goes alone, and the
    pairs that then start at an odd channel are split."""
    for shape, saved in (((4, 6, 4), 4 * 6 * 4 // 2), ((3, 4, 3), 6)):
        x = np.random.default_rng(4).integers(-128, 128, shape)
        (single,), (n1,) = _run([(x, 1)], 0.0)
        (paired,), (n2,) = _run([(x, 1)], 1.0)
        want = ref_windows(x, 1).reshape(-1, 9).tolist()
        assert single == want and paired == want
        assert n1 - n2 == saved, (shape, n1, n2)
