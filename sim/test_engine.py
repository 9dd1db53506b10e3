"""LayerEngine (hw/engine.py) against ref_engine, cocotb + Verilator.

`engine_layers` runs small layers (both kernel sizes, every pool mode, leaky / linear /
head, cout at 1 and at the group limit, W and cin at 1, saturating data, seeded random
layers) with random idle cycles on both input streams and random backpressure on the
output. `engine_slice` runs a Tiny-YOLOv3-shaped group without stalls and reports its
cycles and MAC utilization against the documented schedule (`engine_cycles`).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import cocotb
import numpy as np
import pytest
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from streams import Sink, Source, compare, config, pack, params, run_streams, start

from hw.engine import LayerEngine, layer_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import (
    LAYER_FIELDS,
    engine_cycles,
    group_params,
    group_size,
    max_group,
    param_bytes,
)
from tests.hwbench import beats
from tests.reference import ref_engine

#: Engine configs: the default build and a 4x4 one whose weight memory (144 words) is
#: small enough that the group limit comes from it.
CONFIGS = {
    "default": DEFAULT,
    "small": HwConfig(array_rows=4, array_cols=4, max_width=32, max_in_channels=64,
                      line_buffer_depth=256, weight_mem_bytes=2304),
    # two MACs per multiplier (packed DSP48E1 multipliers, another MAC array latency)
    "small_packed": HwConfig(array_rows=4, array_cols=4, max_width=32, max_in_channels=64,
                             line_buffer_depth=256, weight_mem_bytes=2304, mac_pack=2),
    # C = 6 lanes: no channel count of the list is a multiple of C, so every flat walk
    # ends in a part-filled vector and most vectors cross channels
    "small_c6": HwConfig(array_rows=4, array_cols=6, max_width=32, max_in_channels=64,
                         line_buffer_depth=256, weight_mem_bytes=2304),
    # two output channels a cycle through the serializer, requantizers and max pool
    "small_lanes2": HwConfig(array_rows=4, array_cols=4, max_width=32, max_in_channels=64,
                             line_buffer_depth=256, weight_mem_bytes=2304, out_lanes=2),
}

Layer = tuple[int, int, int, int, int, bool, bool, int, str]  # H W cin cout k leaky head pool


def layers(cfg: HwConfig, seed: int) -> list[Layer]:
    g3, g1 = group_size(cfg, 3, 3), group_size(cfg, 1, 3)
    out: list[Layer] = [
        (5, 7, 3, 1, 3, True, False, 0, "rand"),
        (5, 7, 3, 1, 1, True, False, 0, "rand"),
        (3, 4, 3, g3, 3, True, False, 0, "rand"),          # group limit, 3x3
        (2, 3, 3, g1, 1, False, False, 0, "rand"),         # group limit, 1x1
        (3, 3, 16, group_size(cfg, 3, 16), 3, True, False, 1, "rand"),  # weight memory full
        (5, 7, 3, 6, 3, True, False, 1, "rand"),
        (5, 7, 3, 6, 3, True, False, 2, "rand"),
        (6, 4, 5, 5, 1, True, False, 1, "rand"),
        (5, 7, 3, 6, 1, False, False, 2, "rand"),
        (5, 7, 3, 5, 3, False, True, 0, "rand"),           # linear head
        (4, 5, 9, 7, 1, False, True, 0, "rand"),
        (4, 1, 5, 3, 3, True, False, 0, "rand"),           # W = 1
        (5, 7, 1, 4, 3, True, False, 2, "rand"),           # cin = 1
        (1, 1, 2, 3, 3, True, False, 0, "rand"),
        (3, 3, 4, 3, 3, False, True, 0, "max"),            # saturation, head and int8
        (3, 3, 4, 3, 3, True, False, 0, "min"),
        (3, 4, 2 * cfg.array_cols + 1, 2 * cfg.array_rows + 1, 3, True, False, 0, "rand"),
        # the RGB layer's walk (27 products) and column-pooled (pool 1, cout <= 2R)
        (6, 9, 3, 2 * cfg.array_rows, 3, True, False, 1, "rand"),
        (5, 6, 3, 2 * cfg.array_rows + 1, 3, False, False, 1, "rand"),
        (4, 6, 5, 2 * cfg.array_rows - 1, 3, True, False, 1, "max"),
        (3, 2, 3, 3, 3, True, False, 1, "min"),
    ]
    rng = random.Random(seed)
    for _ in range(4):
        k = rng.choice((1, 3))
        cin = rng.randint(1, min(20, cfg.max_in_channels))
        cout = rng.randint(1, min(group_size(cfg, k, cin), 24))
        pool = rng.choice((0, 1, 2))
        head = pool == 0 and rng.random() < 0.3
        out.append((rng.randint(1, 7), rng.randint(1, 8), cin, cout, k, not head and
                    rng.random() < 0.7, head, pool, "rand"))
    return out


def layer_data(nrng: np.random.Generator, h: int, w: int, cin: int, cout: int, k: int,
               kind: str) -> tuple[np.ndarray, ...]:
    """Input map, OHWI weights, biases, shifts; shifts scaled so outputs mostly fit int8."""
    if kind == "rand":
        x = nrng.integers(-128, 128, (h, w, cin))
        wt = nrng.integers(-127, 128, (cout, k, k, cin))
    else:
        x = np.full((h, w, cin), 127 if kind == "max" else -128)
        wt = np.full((cout, k, k, cin), 127)
    base = int(np.log2(5461 * np.sqrt(k * k * cin))) - 6
    shift = np.clip(base + nrng.integers(-1, 3, cout), 0, 31)
    if kind != "rand":
        shift[:] = 0
    b = nrng.integers(-(1 << 12), 1 << 12, cout) << np.minimum(shift, 10)
    return x, wt, b, shift


def param_stream(w: np.ndarray, b: np.ndarray, shift: np.ndarray) -> list[int]:
    """The group's parameter block as the engine's `params` beats (first byte lowest)."""
    return beats(group_params(config(), w, b, shift), config().param_beat)


def signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


REGISTERS = tuple(name for name, _ in LAYER_FIELDS)


async def junk_registers(dut: Any, rng: random.Random, cycles: int) -> None:
    """Between passes the registers may hold anything: random values, often zero."""
    layout = layer_layout(config())
    for _ in range(cycles):
        dut.layer.value = pack(layout, {
            name: 0 if rng.random() < 0.3 else rng.randrange(1 << fld.shape.width)
            for name, fld in layout})
        await RisingEdge(dut.clk)


async def arm(dut: Any, regs: dict[str, int]) -> None:
    """Set the layer registers, let `shape_ok` judge them (two cycles), pulse start."""
    dut.layer.value = pack(layer_layout(config()), regs)
    await ClockCycles(dut.clk, 2)
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0


def input_items(x: np.ndarray, pairs: str, rng: random.Random) -> list[int]:
    """The input map as raw `input_layout` transfers: one value each (``pairs`` "none"),
    two-value transfers at random ("random"), or as the pass reader sends a dense input
    ("dense": two a transfer up to the last multiple of param_beat values)."""
    vals = [int(v) & 0xFF for v in x.reshape(-1)]
    if pairs == "dense":
        n = len(vals) // config().param_beat * config().param_beat
        n = n if config().param_beat >= 2 else 0
        return ([vals[i] | vals[i + 1] << 8 | 1 << 16 for i in range(0, n, 2)] + vals[n:])
    out = []
    while vals:
        if pairs == "random" and len(vals) > 1 and rng.random() < 0.5:
            out.append(vals[0] | vals[1] << 8 | 1 << 16)
            vals = vals[2:]
        else:
            out.append(vals.pop(0))
    return out


async def run_layer(dut: Any, cfg: HwConfig, layer: Layer, nrng: np.random.Generator,
                    rng: random.Random, idle: float, stall: float,
                    pairs: str = "random") -> tuple[int, int]:
    """One pass; checks every output, done and param_err; returns (cycles port, outputs).
    The input goes as `input_items` (``pairs``)."""
    h, w, cin, cout, k, leaky, head, pool, kind = layer
    x, wt, b, shift = layer_data(nrng, h, w, cin, cout, k, kind)
    expected = ref_engine(x, wt, b, shift, leaky=leaky, head=head, pool=pool,
                          cfg=cfg).reshape(-1).tolist()
    await junk_registers(dut, rng, rng.randrange(4))
    await arm(dut, {"width": w, "height": h, "cin": cin, "cout": cout, "k3": int(k == 3),
                    "leaky": int(leaky), "head": int(head), "pool": pool})
    prm = param_stream(wt, b, shift)
    assert len(prm) * cfg.param_beat == param_bytes(cfg, k, cin, cout)
    sink = Sink("o", len(expected), stall=stall)
    sources = [Source("params", prm, idle=idle),
               Source("i", input_items(x, pairs, rng), idle=idle)]
    budget = 20 * (len(prm) + engine_cycles(cfg, h, w, cin, cout, k) + len(expected)) + 500
    try:
        await run_streams(dut, sources, [sink], rng, max_cycles=budget)
    except AssertionError as e:
        raise AssertionError(f"engine {layer}: {e}") from e
    got = [signed(v, cfg.head_bits) for v in sink.got]
    compare(f"engine {layer}", expected, got)
    # Pool 1 drops an odd last row: its conv results may still be in flight. Wait for
    # done (output ready high): no further output may appear.
    for _ in range(budget):
        if int(dut.done.value):
            break
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert not int(dut.o__valid.value), f"engine {layer}: output after the last one"
    await RisingEdge(dut.clk)
    assert int(dut.done.value) == 1 and int(dut.busy.value) == 0, f"engine {layer}: not done"
    assert int(dut.param_err.value) == 0, "param_err after an exact parameter stream"
    return int(dut.cycles.value), len(expected)


@cocotb.test()
async def engine_layers(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    nrng = np.random.default_rng(p["seed"])
    dut.start.value = 0
    await start(dut)
    for layer in layers(cfg, p["seed"]):
        await run_layer(dut, cfg, layer, nrng, rng, p["idle"], p["stall"])


@cocotb.test()
async def engine_param_overflow(dut: Any) -> None:
    """Beats past the group's parameters are dropped and raise param_err until start."""
    cfg = config()
    rng = random.Random(7)
    nrng = np.random.default_rng(7)
    dut.start.value = 0
    await start(dut)
    x, wt, b, shift = layer_data(nrng, 3, 3, 2, 3, 3, "rand")
    await arm(dut, {"width": 3, "height": 3, "cin": 2, "cout": 3, "k3": 1, "leaky": 1,
                    "head": 0, "pool": 0})
    expected = ref_engine(x, wt, b, shift, leaky=True, head=False, pool=0,
                          cfg=cfg).reshape(-1).tolist()
    sink = Sink("o", len(expected))
    await run_streams(dut, [Source("params", [*param_stream(wt, b, shift), 1, 2, 3]),
                            Source("i", [int(v) & 0xFF for v in x.reshape(-1)])],
                      [sink], rng, max_cycles=5000)
    compare("engine overflow", expected, [signed(v, cfg.head_bits) for v in sink.got])
    assert int(dut.param_err.value) == 1
    # A fresh start clears the flag and the next pass is exact again.
    await run_layer(dut, cfg, (3, 3, 2, 3, 3, True, False, 0, "rand"), nrng, rng, 0.0, 0.0)


@cocotb.test()
async def engine_idle_registers(dut: Any) -> None:
    """Zero registers for a long while after reset, then illegal shapes: each start is
    refused (param_err, never busy) and the next legal pass is exact."""
    cfg = config()
    rng = random.Random(11)
    nrng = np.random.default_rng(11)
    dut.start.value = 0
    dut.layer.value = 0
    await start(dut)
    await ClockCycles(dut.clk, 300)
    await ReadOnly()
    assert not int(dut.o__valid.value) and not int(dut.busy.value)
    assert not int(dut.shape_ok.value), "zero-sized registers judged legal"
    await RisingEdge(dut.clk)
    ok = {"width": 3, "height": 3, "cin": 2, "cout": 3, "k3": 1, "leaky": 1, "head": 0,
          "pool": 0}
    depth = cfg.line_buffer_depth
    bad = [{}, {"width": 0}, {"height": 0}, {"cin": 0}, {"cout": 0},
           {"width": cfg.max_width + 1}, {"height": cfg.max_width + 1},
           {"cin": cfg.max_in_channels + 1}, {"cout": max_group(cfg) + 1}, {"pool": 3},
           {"head": 1, "pool": 1},
           {"width": cfg.max_width, "cin": depth // cfg.max_width + 1},          # 3x3 rows
           {"width": cfg.max_width, "cout": min(max_group(cfg), depth // cfg.max_width + 1),
            "pool": 2}]
    for change in bad:
        regs = {**ok, **change} if change else dict.fromkeys(REGISTERS, 0)
        await arm(dut, regs)
        await ReadOnly()
        assert int(dut.param_err.value) == 1, f"start with {change} not refused"
        assert not int(dut.busy.value), f"start with {change} began a pass"
        await RisingEdge(dut.clk)
    await junk_registers(dut, rng, 200)
    await run_layer(dut, cfg, (3, 3, 2, 3, 3, True, False, 0, "rand"), nrng, rng, 0.0, 0.0)
    await run_layer(dut, cfg, (5, 4, 3, 2, 1, True, False, 2, "rand"), nrng, rng, 0.2, 0.2)


@cocotb.test()
async def engine_slice(dut: Any) -> None:
    """A Tiny-YOLOv3-shaped group without stalls: cycles and utilization vs the model."""
    cfg, p = config(), params()
    rng = random.Random(1)
    nrng = np.random.default_rng(1)
    dut.start.value = 0
    await start(dut)
    for h, w, cin, cout, k, pool, *single in p["slices"]:
        # As the pass reader sends a dense input (row 0 two values a cycle), or with
        # a trailing 1, one value a transfer.
        pairs = not (single and single[0])
        cout = min(cout, group_size(cfg, k, cin))
        cycles, _ = await run_layer(dut, cfg, (h, w, cin, cout, k, True, False, pool, "rand"),
                                    nrng, rng, 0.0, 0.0, "dense" if pairs else "none")
        model = engine_cycles(cfg, h, w, cin, cout, k, pool, pairs and cfg.param_beat >= 2)
        util = h * w * k * k * cin * cout / (cycles * cfg.macs_per_cycle)
        dut._log.info(f"slice {h}x{w}x{cin} k{k} cout {cout} pool {pool} "
                      f"{'pairs' if pairs else 'single'}: {cycles} cycles "
                      f"(model {model}), MAC utilization {util:.1%}")
        assert abs(cycles - model) <= 0.01 * model + 20, (cycles, model)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_engine(name: str) -> None:
    from harness import run_block

    cfg = CONFIGS[name]
    # [H, W, cin, cout (capped at the group size), k, pool]: layer 12, 13, 0 (on a 32x32
    # map) and 10 (with its stride-1 pool) shapes; on the small configs one 3x3 group and
    # 1x1 groups of an odd and an even cin (two-value transfers: `input_steps_1x1`).
    # Layer 12 also with one input value a transfer (the streaming device's input).
    slices = ([[13, 13, 512, 1024, 3, 0], [13, 13, 512, 1024, 3, 0, 1],
               [13, 13, 1024, 256, 1, 0], [32, 32, 3, 16, 3, 1], [13, 13, 256, 512, 3, 2]]
              if name == "default" else [[4, 4, 64, 64, 3, 0], [4, 4, 64, 64, 3, 0, 1],
                                         [6, 6, 13, 8, 3, 0], [5, 5, 29, 8, 1, 0],
                                         [6, 6, 32, 8, 1, 0]])
    if cfg.out_lanes == 2:
        # Stride-2 pools: column-pooled with its output at a value a cycle, and not.
        slices += [[16, 16, 1, 8, 1, 1], [8, 8, 8, 16, 3, 1], [6, 6, 4, 8, 3, 2]]
    run_block(LayerEngine(cfg), "engine", "base", cfg, "test_engine",
              {"seed": 3000 + len(name), "idle": 0.25, "stall": 0.25, "slices": slices},
              seed=13)


#: Board configs (boards/*.json) with a small max_width: the schedule model against the
#: Verilator engine on Tiny-YOLOv3-shaped groups of each array shape (bench.explore_arrays).
#: Run by `python bench/board_slices.py --board NAME` (about 10 minutes for the A7-100T's
#: 400-MAC engine, most of it the Verilator build: a bench, not a `make test` case).
BOARD_SLICES = [[13, 13, 512, 1024, 3, 0], [13, 13, 1024, 256, 1, 0], [32, 32, 3, 16, 3, 1],
                [13, 13, 256, 512, 3, 2], [16, 16, 16, 32, 3, 1], [16, 16, 32, 64, 3, 1]]


def board_slice_config(board: str) -> HwConfig:
    """The board's config with max_width 32 (the slices' maps are at most 32 wide)."""
    from boards import BOARDS

    return dataclasses.replace(HwConfig.load(BOARDS[board].default_config_path()),
                               max_width=32)


