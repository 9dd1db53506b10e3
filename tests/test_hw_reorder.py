"""ReorderBuffer (hw/engine/reorder.py): windows in with random idle cycles, pixels read
back and freed by a consumer with random delays; every pixel's words (its flat walk, in
3x3 and 1x1 mode) against the windows that made it, the banks in turn, never more than
BANKS pixels held."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from hw.engine import ReorderBuffer
from hw.spec.config import HwConfig
from hw.spec.engine import BANKS, TAPS
from tests.hwbench import send, simulate, to_py

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)


def ref_pixel_words(windows: list[list[int]], cols: int, k3: bool) -> list[dict[int, int]]:
    """The words a pixel's windows (channel c: 9 taps) leave in its bank: the flat walk
    (product c * 9 + tap in 3x3 mode, c alone the centre tap in 1x1 mode), product f at
    element f % 9C of word f // 9C; elements past the walk are stale."""
    walk = [t for taps in windows for t in (taps if k3 else taps[TAPS // 2:TAPS // 2 + 1])]
    span = TAPS * cols
    words: list[dict[int, int]] = [{} for _ in range(math.ceil(len(walk) / span))]
    for f, v in enumerate(walk):
        words[f // span][f % span] = v
    return words


def transfers(windows: list[list[list[int]]], k3: bool, pairs: bool) -> list[dict[str, object]]:
    """The window generator's transfers of the pixels' windows (`gen_layout`): one window
    each, or with `pairs` (1x1) channels c, c + 1 of a pixel (c even) in one."""
    out: list[dict[str, object]] = []
    for px in windows:
        c = 0
        while c < len(px):
            if pairs and not k3 and c % 2 == 0 and c + 1 < len(px):
                taps = [0] * TAPS
                taps[TAPS // 2], taps[TAPS // 2 + 1] = px[c][TAPS // 2], px[c + 1][TAPS // 2]
                out.append({"taps": taps, "two": 1})
                c += 2
            else:
                out.append({"taps": px[c], "two": 0})
                c += 1
    return out


def _run(cin: int, pixels: int, seed: int, idle: float, delay: float, k3: bool = True,
         pairs: bool = False, cfg: HwConfig = CFG) -> None:
    dut = ReorderBuffer(cfg)
    rng = random.Random(seed)
    windows = [[[rng.randrange(-128, 128) for _ in range(TAPS)] for _ in range(cin)]
               for _ in range(pixels)]
    accepted: list[int] = [0]
    errors: list[str] = []

    async def consumer(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.setup.cin_m1, cin - 1)
        ctx.set(dut.setup.k3, k3)
        for p in range(pixels):
            while rng.random() < delay:
                await ctx.tick()
            await ctx.tick().until(dut.pixel.valid)
            held = accepted[0] - p * cin
            if not cin <= held <= BANKS * cin:
                errors.append(f"pixel {p}: {held} windows held, expected {cin}..{BANKS * cin}")
            want = ref_pixel_words(windows[p], cfg.array_cols, k3)
            for q in rng.sample(range(len(want)), len(want)):     # any order
                ctx.set(dut.rd.addr, q)
                ctx.set(dut.rd.en, 1)
                await ctx.tick()
                ctx.set(dut.rd.en, 0)
                word = to_py(ctx.get(dut.rd.data))
                got = {e: word[e] for e in want[q]}
                if got != want[q]:
                    errors.append(f"pixel {p} word {q}: expected {want[q]}, actual {got}")
            assert ctx.get(dut.pixel.valid)
            ctx.set(dut.pixel.ready, 1)
            await ctx.tick()
            ctx.set(dut.pixel.ready, 0)

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, valid, ready, two in ctx.tick().sample(dut.i.valid, dut.i.ready,
                                                                 dut.i.payload.two):
            accepted[0] += (valid & ready) * (1 + two)

    simulate(dut, [send(dut.i, transfers(windows, k3, pairs), rng, idle), consumer],
             cycles=40 * pixels * (cin + 4), processes=[monitor])
    assert not errors, "\n".join(errors[:5])


@pytest.mark.parametrize(("cin", "seed", "idle", "delay", "k3"), [
    (1, 1, 0.0, 0.0, True), (3, 2, 0.3, 0.5, True), (4, 3, 0.0, 0.9, True),
    (5, 4, 0.5, 0.2, True), (16, 5, 0.2, 0.6, True), (9, 6, 0.0, 0.95, True),
    (1, 7, 0.0, 0.0, False), (16, 8, 0.3, 0.4, False),     # 1x1: 36 centre taps a word
])
def test_reorder_buffer_matches_reference(cin: int, seed: int, idle: float, delay: float,
                                          k3: bool) -> None:
    _run(cin, 8, seed, idle, delay, k3)


@pytest.mark.parametrize(("cin", "seed", "idle", "delay"), [
    (2, 10, 0.0, 0.0), (5, 11, 0.3, 0.5), (16, 12, 0.2, 0.6), (40, 13, 0.0, 0.3),
    (39, 14, 0.2, 0.2),
])
def test_reorder_buffer_1x1_pairs(cin: int, seed: int, idle: float, delay: float) -> None:
    """1x1 transfers of two channels (an even C: 36 elements a word, so a pair at an even
    channel never straddles two words; cin 40 spans two words), mixed with single ones
    where cin is odd."""
    _run(cin, 6, seed, idle, delay, False, pairs=True,
         cfg=dataclasses.replace(CFG, max_in_channels=64))


def test_reorder_buffer_takes_a_window_per_cycle() -> None:
    """With a free bank and a prompt consumer the windows never wait."""
    dut = ReorderBuffer(CFG)
    rng = random.Random(9)
    cin, pixels = 4, 5
    stalls: list[int] = [0]

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.setup.cin_m1, cin - 1)
        ctx.set(dut.setup.k3, 1)
        ctx.set(dut.i.valid, 1)
        for _ in range(pixels * cin):
            ctx.set(dut.i.payload, {"taps": [rng.randrange(-128, 128) for _ in range(TAPS)],
                                    "two": 0})
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            while not ready:
                stalls[0] += 1
                _, _, ready = await ctx.tick().sample(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx) -> None:  # type: ignore[no-untyped-def]
        for _ in range(pixels):
            await ctx.tick().until(dut.pixel.valid)
            ctx.set(dut.pixel.ready, 1)
            await ctx.tick()
            ctx.set(dut.pixel.ready, 0)

    simulate(dut, [source, consumer], cycles=200)
    assert stalls[0] == 0
