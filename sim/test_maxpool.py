"""MaxPool (hw/maxpool.py) against ref_maxpool, cocotb + Verilator."""

from __future__ import annotations

import random
from typing import Any

import cocotb
import numpy as np
import pytest
from streams import FRAME_CONFIGS as CONFIGS
from streams import Sink, Source, compare, config, frame_data, params, run_streams, start

from hw.maxpool import MAXPOOL_LATENCY, MaxPool, maxpool_out_shape
from hw.spec.config import HwConfig
from tests.reference import ref_maxpool

Frame = tuple[int, int, int, bool, str, bool]    # H, W, C, stride2, data kind, vertical


def frames(cfg: HwConfig) -> list[Frame]:
    """Borders, W and C at 1 and at the config's limits, odd sizes, extreme values."""
    wmax, cmax, depth = cfg.max_width, cfg.max_in_channels, cfg.line_buffer_depth
    out: list[Frame] = []
    for s2, vert in ((False, False), (True, False), (True, True)):
        out += [
            (1, 1, 1, s2, "rand", vert), (2, 2, 1, s2, "rand", vert),
            (1, 3, 2, s2, "rand", vert), (5, 7, 3, s2, "rand", vert),
            (4, 4, 2, s2, "min", vert), (3, 4, 2, s2, "max", vert),
            (4, 6, 3, s2, "ramp", vert), (2, 2, 1, s2, "min", vert),
            (2, wmax, 1, s2, "rand", vert),                     # widest row
            (2, 1, cmax, s2, "rand", vert),                     # most channels
            (2, depth // cmax, cmax, s2, "rand", vert),         # W * C = line buffer depth
        ]
    out += [(13, 13, 4, False, "rand", False), (8, 8, 4, True, "rand", False),
            (3, 1, 1, True, "rand", False), (7, 5, 3, True, "rand", True)]
    return out


@cocotb.test()
async def maxpool_frames(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    nrng = np.random.default_rng(p["seed"])
    await start(dut)
    for h, w, c, s2, kind, vert in frames(cfg):
        x = frame_data(nrng, h, w, c, kind)
        expected = ref_maxpool(x, s2, vert).reshape(-1).tolist()
        oh, ow = maxpool_out_shape(h, w, s2, vert)
        assert len(expected) == oh * ow * c
        dut.width.value, dut.height.value, dut.channels.value = w, h, c
        dut.stride2.value, dut.vertical.value = int(s2), int(vert)
        sink = Sink("o", len(expected), stall=p["stall"])
        src = Source("i", [int(v) & 0xFF for v in x.reshape(-1)], idle=p["idle"])
        await run_streams(dut, [src], [sink], rng, max_cycles=10 * (h + 1) * (w + 1) * c + 200)
        got = [v - 256 if v > 127 else v for v in sink.got]
        compare(f"maxpool H={h} W={w} C={c} stride2={s2} vertical={vert} {kind}", expected,
                got)


@cocotb.test()
async def maxpool_throughput(dut: Any) -> None:
    """No stalls: stride 2 takes one pixel per cycle, stride 1 adds the padding walk."""
    await start(dut)
    rng = random.Random(3)
    nrng = np.random.default_rng(3)
    for s2, h, w, c in ((True, 6, 8, 4), (False, 5, 6, 3)):
        x = frame_data(nrng, h, w, c, "rand")
        dut.width.value, dut.height.value, dut.channels.value = w, h, c
        dut.stride2.value, dut.vertical.value = int(s2), 0
        expected = ref_maxpool(x, s2).reshape(-1).tolist()
        sink = Sink("o", len(expected))
        await run_streams(dut, [Source("i", [int(v) & 0xFF for v in x.reshape(-1)])], [sink],
                          rng, max_cycles=10_000, drain=0)
        compare("maxpool", expected, [v - 256 if v > 127 else v for v in sink.got])
        walk = h * w * c if s2 else (h + 1) * (w + 1) * c
        # First pixel shown in cycle 1; the last window completes at the walk's last step.
        assert sink.cycles[-1] == walk + MAXPOOL_LATENCY, (sink.cycles[-1], walk)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_maxpool(name: str) -> None:
    from harness import run_block

    cfg = CONFIGS[name]
    run_block(MaxPool(cfg), "maxpool", "base", cfg, "test_maxpool",
              {"seed": 2000 + len(name), "idle": 0.25, "stall": 0.25}, seed=11)
