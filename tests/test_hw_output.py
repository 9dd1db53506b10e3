"""OutputStage (hw/engine/output.py): requantizer inputs with random idle cycles, outputs
with random backpressure, against `ref_requant` and `ref_maxpool` (no pool, stride 2,
stride 2 vertical, stride 1; int8 and head outputs); one `conv` pulse per requantized
value and one `out` pulse per output."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth.hdl import signed

from hw.engine import OutputStage
from hw.engine.output import LaneSplitter
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2
from tests.hwbench import compare, receive, send, simulate
from tests.reference import ref_maxpool, ref_requant

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
#: Two channels a transfer: two requantizers, the max pool on pairs, the queue and the
#: lane splitter (odd channel counts: the last transfer's second element is dropped).
CFG2 = dataclasses.replace(CFG, out_lanes=2)


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["lanes1", "lanes2"])
@pytest.mark.parametrize(("h", "w", "c", "pool", "vertical", "head", "seed", "idle", "stall"), [
    (3, 4, 2, POOL_NONE, False, False, 1, 0.3, 0.3),
    (2, 3, 3, POOL_NONE, False, True, 2, 0.0, 0.5),
    (4, 4, 2, POOL_S2, False, False, 3, 0.2, 0.2),
    (5, 3, 3, POOL_S2, True, False, 4, 0.4, 0.4),
    (3, 5, 2, POOL_S1, False, False, 5, 0.3, 0.6),
    (3, 3, 1, POOL_S2, False, False, 6, 0.0, 0.0),
    (4, 6, 3, POOL_S2, True, False, 7, 0.2, 0.3),
    (3, 4, 5, POOL_NONE, False, True, 8, 0.0, 0.0),
])
def test_output_stage_matches_reference(cfg: HwConfig, h: int, w: int, c: int, pool: int,
                                        vertical: bool, head: bool, seed: int, idle: float,
                                        stall: float) -> None:
    dut = OutputStage(cfg)
    lanes = cfg.out_lanes
    cl = -(-c // lanes)                     # transfers a pixel
    rng = random.Random(seed)
    leaky = int(rng.random() < 0.5)
    values = [[{"acc": rng.randrange(-20000, 20000), "bias": rng.randrange(-3000, 3000),
                "shift": rng.randrange(0, 9), "leaky": leaky, "head": int(head)}
               for _ in range(cl * lanes)] for _ in range(h * w)]
    inputs = [px[k:k + lanes] for px in values for k in range(0, cl * lanes, lanes)]
    y = np.array([ref_requant(v["acc"], v["bias"], v["shift"], v["leaky"], v["head"], cfg)
                  for px in values for v in px[:c]]).reshape(h, w, c)
    want = (y if pool == POOL_NONE else ref_maxpool(y, pool == POOL_S2, vertical)).reshape(-1)
    got: list[int] = []
    pulses = {"conv": 0, "out": 0}

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, {"width": w, "height": h, "cin": 1, "cout": c, "k3": 0,
                            "leaky": leaky, "head": int(head), "pool": pool})
        ctx.set(dut.frame, {"width": w, "height": h, "channels": cl,
                            "stride2": int(pool == POOL_S2), "vertical": int(vertical)})
        await ctx.tick()
        await send(dut.i, inputs, rng, idle)(ctx)
        await ctx.tick().repeat(30)         # a dropped last row still leaves the requantizer

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, conv, out in ctx.tick().sample(dut.conv, dut.out):
            pulses["conv"] += conv
            pulses["out"] += out

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall)],
             cycles=10 * (h + 1) * (w + 1) * c + 100, processes=[monitor])
    compare(f"output stage {h}x{w}x{c} pool {pool} lanes {lanes}", want.tolist(), got)
    assert pulses == {"conv": h * w * cl, "out": len(want)}, pulses


@pytest.mark.parametrize(("count", "seed", "idle", "stall"), [
    (1, 1, 0.0, 0.0), (2, 2, 0.3, 0.3), (5, 3, 0.2, 0.6), (8, 4, 0.5, 0.1),
])
def test_lane_splitter(count: int, seed: int, idle: float, stall: float) -> None:
    """Pairs in, values out in order; a pixel's pair past `count` channels (odd counts)
    loses its second value; `out` pulses once per value."""
    dut = LaneSplitter(signed(16), 2, 16)
    rng = random.Random(seed)
    pixels = [[rng.randrange(-2**15, 2**15) for _ in range(count)] for _ in range(5)]
    pairs = [[px[k], px[k + 1] if k + 1 < count else rng.randrange(-2**15, 2**15)]
             for px in pixels for k in range(0, count, 2)]
    want = [v for px in pixels for v in px]
    got: list[int] = []
    outs = [0]

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.count_m1, count - 1)
        await send(dut.i, pairs, rng, idle)(ctx)

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, out in ctx.tick().sample(dut.out):
            outs[0] += out

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall)],
             cycles=10 * len(want) + 50, processes=[monitor])
    compare(f"lane splitter, {count} channels", want, got)
    assert outs[0] == len(want)
