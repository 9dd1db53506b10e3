"""WindowGen (hw/linebuf.py) against ref_windows, cocotb + Verilator."""

from __future__ import annotations

import random
from typing import Any

import cocotb
import numpy as np
import pytest
from cocotb.triggers import ClockCycles
from streams import FRAME_CONFIGS as CONFIGS
from streams import Sink, Source, compare, config, frame_data, params, run_streams, start, unpack

from hw.linebuf import WINDOW_LATENCY, WindowGen, gen_layout
from hw.spec.config import HwConfig
from hw.spec.engine import input_steps_1x1, pairs_1x1
from tests.reference import expand_windows, ref_windows

Frame = tuple[int, int, int, int, str]    # H, W, C, kernel size, data kind


def frames(cfg: HwConfig) -> list[Frame]:
    """All four borders, W and C at 1 and at the config's limits, extreme values."""
    wmax, cmax, depth = cfg.max_width, cfg.max_in_channels, cfg.line_buffer_depth
    out: list[Frame] = []
    for k in (3, 1):
        out += [
            (1, 1, 1, k, "rand"), (2, 1, 1, k, "rand"), (1, 2, 1, k, "rand"),
            (3, 3, 1, k, "rand"), (4, 5, 3, k, "rand"), (5, 4, 2, k, "min"),
            (3, 4, 2, k, "max"), (6, 7, 3, k, "rand"),
            (2, wmax, 1, k, "rand"),                      # widest row
            (2, 1, cmax, k, "rand"),                      # most channels
            (2, depth // cmax, cmax, k, "rand"),          # W * C = line buffer depth
        ]
    out += [(13, 13, 4, 3, "rand"), (9, 2, 5, 3, "rand")]
    return out


def items(x: np.ndarray, rng: random.Random, pair_p: float = 0.5) -> list[int]:
    """The map as raw `input_layout` transfers: two values (``two``) with probability
    `pair_p`, else one."""
    vals = [int(v) & 0xFF for v in x.reshape(-1)]
    out = []
    while vals:
        if len(vals) > 1 and rng.random() < pair_p:
            out.append(vals[0] | vals[1] << 8 | 1 << 16)
            vals = vals[2:]
        else:
            out.append(vals.pop(0))
    return out


def transfers(cfg: HwConfig, x: np.ndarray, k: int, raw: list[int]) -> int:
    """Output transfers of a frame sent as `raw` transfers: a window per value, but one
    per 1x1 pair of channels c, c + 1 (c even) sent together where `pairs_1x1`."""
    c, n, pos = x.shape[2], x.size, 0
    for t in raw:
        if t >> 16 and k == 1 and pairs_1x1(cfg) and pos % c % 2 == 0 and pos % c != c - 1:
            n -= 1
        pos += 2 if t >> 16 else 1
    return n


@cocotb.test()
async def windows_frames(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    nrng = np.random.default_rng(p["seed"])
    lay = gen_layout(cfg)
    await start(dut)
    for h, w, c, k, kind in frames(cfg):
        x = frame_data(nrng, h, w, c, kind)
        expected = ref_windows(x, k).reshape(-1, 9).tolist()
        dut.width.value, dut.height.value, dut.channels.value = w, h, c
        dut.k3.value = int(k == 3)
        await ClockCycles(dut.clk, 1)                 # the ports hold a cycle before the frame
        src = Source("i", items(x, rng), idle=p["idle"])
        sink = Sink("o", transfers(cfg, x, k, src.items), stall=p["stall"])
        await run_streams(dut, [src], [sink], rng, max_cycles=10 * (h + 1) * (w + 1) * c + 200)
        compare(f"windows H={h} W={w} C={c} k={k} {kind}", expected,
                expand_windows([unpack(lay, v) for v in sink.got]))


@cocotb.test()
async def windows_throughput(dut: Any) -> None:
    """No stalls: 1x1 takes one pixel per cycle, 3x3 adds the padding walk (less row 0's
    padding column), and two-value transfers fill row 0 of a 3x3 frame two a cycle."""
    cfg = config()
    lay = gen_layout(cfg)
    await start(dut)
    rng = random.Random(3)
    nrng = np.random.default_rng(3)
    for k, h, w, c, pair_p in ((1, 4, 5, 3, 0), (3, 5, 6, 3, 0), (3, 5, 6, 3, 1),
                               (1, 4, 5, 3, 1)):
        x = frame_data(nrng, h, w, c, "rand")
        dut.width.value, dut.height.value, dut.channels.value = w, h, c
        dut.k3.value = int(k == 3)
        await ClockCycles(dut.clk, 1)
        expected = ref_windows(x, k).reshape(-1, 9).tolist()
        src = Source("i", items(x, rng, pair_p))
        sink = Sink("o", transfers(cfg, x, k, src.items))
        await run_streams(dut, [src], [sink], rng, max_cycles=10_000, drain=0)
        compare("windows", expected, expand_windows([unpack(lay, v) for v in sink.got]))
        row0 = (w * c + 1) // 2 if pair_p else w * c
        px1 = (sum(input_steps_1x1(c, n) for n in range(h * w)) if pair_p and pairs_1x1(cfg)
               else h * w * c)
        walk = px1 if k == 1 else row0 + h * (w + 1) * c
        assert sink.cycles[-1] == walk + WINDOW_LATENCY, (sink.cycles[-1], walk)
        if k == 1:
            assert sink.cycles[0] == 1 + WINDOW_LATENCY, sink.cycles[:3]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_linebuf(name: str) -> None:
    from harness import run_block

    cfg = CONFIGS[name]
    run_block(WindowGen(cfg), "linebuf", "base", cfg, "test_linebuf",
              {"seed": 4000 + len(name), "idle": 0.25, "stall": 0.25}, seed=17)
