"""Feeder (hw/engine/feeder.py): pixels offered with random delays, block-RAM models of the
reorder buffer and the weight memory, the MAC array vectors taken with random
backpressure; every vector against the walk the feeder's contract states (3x3, 1x1,
cin and cout not multiples of the array, the flat walk's vectors across channels and
words; one channel, one row)."""

from __future__ import annotations

import math
import random

import pytest

from hw.engine import Feeder, setup_layout
from hw.engine.layouts import chunks_max, weight_depth
from hw.spec.config import HwConfig
from hw.spec.engine import TAPS
from tests.hwbench import compare, fit, receive, send, simulate
from tests.reference import ref_layer_decode

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
R, C = CFG.array_rows, CFG.array_cols


def ref_vectors(words: list[list[int]], weights: list[list[int]], setup: dict[str, int],
                cout: int) -> list[dict[str, object]]:
    """The vectors of one pixel: per row block, runs of C products of the flat walk, lane
    n of vector v the walk's product f = v * C + n (element f % 9C of pixel word
    f // 9C; 0 for f >= walk), the next weight word, `last` at the end of the row
    block."""
    walk, span = setup["walk"], TAPS * C
    nv = math.ceil(walk / C)
    out: list[dict[str, object]] = []
    for rb in range(math.ceil(cout / R)):
        for v in range(nv):
            x = [words[f // span][f % span] if f < walk else 0
                 for f in range(v * C, v * C + C)]
            w = weights[rb * nv + v]
            out.append({"x": x, "w": [w[r * C:(r + 1) * C] for r in range(R)],
                        "last": int(v == nv - 1)})
    return out


def _run(k3: bool, cin: int, cout: int, pixels: int, seed: int, idle: float,
         stall: float) -> None:
    dut = Feeder(CFG)
    rng = random.Random(seed)
    layer = {"width": 4, "height": 4, "cin": cin, "cout": cout, "k3": int(k3), "leaky": 0,
             "head": 0, "pool": 0}
    setup = ref_layer_decode(CFG, layer)["setup"]

    def word(n: int) -> list[int]:
        return [rng.randrange(-128, 128) for _ in range(n)]

    words = [[word(TAPS * C) for _ in range(chunks_max(CFG))] for _ in range(pixels)]
    weights = [word(R * C) for _ in range(weight_depth(CFG))]
    want = [v for p in range(pixels)
            for v in ref_vectors(words[p], weights, setup, cout)]
    got: list[dict[str, object]] = []

    async def pixel_source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, layer)
        ctx.set(dut.setup, fit(setup_layout(CFG), setup))
        await ctx.tick().repeat(2)                 # setup held before the first pixel
        await send(dut.pixel, [0] * pixels, rng, idle)(ctx)

    async def memories(ctx) -> None:  # type: ignore[no-untyped-def]
        p = 0                                       # the pixel on offer
        async for _, _, pa, pen, wa, wen, pv, pr in ctx.tick().sample(
                dut.pix.addr, dut.pix.en, dut.weights.addr, dut.weights.en,
                dut.pixel.valid, dut.pixel.ready):
            if pen:
                ctx.set(dut.pix.data, words[min(p, pixels - 1)][pa])
            if wen:
                ctx.set(dut.weights.data, weights[wa % len(weights)])
            p += pv & pr

    simulate(dut, [pixel_source, receive(dut.o, len(want), got, rng, stall)],
             cycles=4 * len(want) + 50 * pixels + 100, processes=[memories])
    compare(f"feeder k3={k3} cin={cin} cout={cout}", want, got)


@pytest.mark.parametrize(("k3", "cin", "cout", "seed", "idle", "stall"), [
    (True, 5, 6, 1, 0.3, 0.3),
    (True, 3, 5, 2, 0.2, 0.4),       # the RGB layer's walk: 27 products
    (True, 3, 16, 3, 0.0, 0.0),      # four row blocks, no stalls
    (True, 11, 4, 9, 0.2, 0.2),      # 99 products: 25 vectors over 3 words
    (False, 7, 9, 4, 0.5, 0.2),
    (True, 16, 8, 5, 0.1, 0.5),      # the weight memory full
    (True, 1, 1, 6, 0.4, 0.4),
    (False, 4, 4, 7, 0.0, 0.7),
    (False, 16, 16, 8, 0.3, 0.0),
    (False, 13, 3, 10, 0.1, 0.3),     # 1x1: a walk of 13, one word
])
def test_feeder_matches_reference(k3: bool, cin: int, cout: int, seed: int, idle: float,
                                  stall: float) -> None:
    _run(k3, cin, cout, 4, seed, idle, stall)


def test_feeder_runs_a_vector_per_cycle() -> None:
    """Pixels always offered and vectors always taken: one vector per cycle, no gap
    between pixels, the first 5 cycles after the first pixel (F0, F1, F2, F2b, F3)."""
    dut = Feeder(CFG)
    rng = random.Random(11)
    layer = {"width": 4, "height": 4, "cin": 5, "cout": 6, "k3": 1, "leaky": 0, "head": 0,
             "pool": 0}
    setup = ref_layer_decode(CFG, layer)["setup"]
    per_pixel = len(ref_vectors([[0] * TAPS * C] * 4, [[0] * R * C] * 72, setup, 6))
    got: list[dict[str, object]] = []
    times: list[int] = []

    async def pixel_source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, layer)
        ctx.set(dut.setup, fit(setup_layout(CFG), setup))
        await ctx.tick().repeat(2)
        await send(dut.pixel, [0] * 3, rng)(ctx)

    async def sink(ctx) -> None:  # type: ignore[no-untyped-def]
        await ctx.tick().repeat(2)
        await receive(dut.o, 3 * per_pixel, got, rng, times=times)(ctx)

    simulate(dut, [pixel_source, sink], cycles=400)
    assert times == list(range(5, 5 + 3 * per_pixel)), times[:8]
