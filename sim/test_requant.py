"""Requantizer (hw/requant.py) against ref_requant (hw.spec.intmath.requant), cocotb + Verilator."""

from __future__ import annotations

import random
from typing import Any

import cocotb
import pytest
from streams import Sink, Source, compare, config, pack, params, run_streams, start

from hw.requant import REQUANT_LATENCY, Requantizer, requant_in_layout
from hw.spec.config import DEFAULT, HwConfig
from tests.reference import ref_requant

Item = tuple[int, int, int, int, int]   # acc, bias, shift, leaky, head


def corner_cases(cfg: HwConfig) -> list[Item]:
    """Saturation at both ends, rounding ties, shift 0 and max, negative leaky inputs."""
    amax, amin = (1 << (cfg.acc_bits - 1)) - 1, -(1 << (cfg.acc_bits - 1))
    smax = cfg.max_shift
    cases: list[Item] = []
    for head in (0, 1):
        for leaky in (0, 1):
            for acc, bias in ((amax, amax), (amin, amin), (amax, 0), (amin, 0), (0, 0),
                              (1, 0), (-1, 0), (amax, amin), (cfg.act_max + 1, 0),
                              (cfg.act_min - 1, 0)):
                for shift in (0, 1, 7, smax):
                    cases.append((acc, bias, shift, leaky, head))
    # Rounding ties (x = k * 2**s + 2**(s-1), both signs) and their neighbours.
    for s in range(1, smax + 1):
        for k in (-3, -2, -1, 0, 1, 2, 100, -100):
            tie = k * (1 << s) + (1 << (s - 1))
            for d in (-1, 0, 1):
                acc = tie + d
                if amin <= acc <= amax:
                    cases.append((acc, 0, s, 0, 0))
                    cases.append((acc, 0, s, 0, 1))
    # Leaky ties: 13 * acc lands on a tie of shift + 7.
    for s in range(0, smax + 1):
        for acc in range(-40, 0):
            acc *= 1 << max(s - 3, 0)
            if acc >= amin:
                cases.append((acc, 0, s, 1, acc & 1))
    # Saturation boundaries of int8 and of the head format, just inside and outside.
    for head, bits in ((0, cfg.act_bits), (1, cfg.head_bits)):
        for edge in (-(1 << (bits - 1)), (1 << (bits - 1)) - 1):
            for d in (-1, 0, 1):
                for s in (0, 3):
                    if amin <= (edge + d) << s <= amax:
                        cases.append(((edge + d) << s, 0, s, 0, head))
                        cases.append(((edge + d) << s, 0, s, 1, head))
    return cases


def random_cases(cfg: HwConfig, rng: random.Random, n: int) -> list[Item]:
    out: list[Item] = []
    lim = cfg.bias_limit
    for _ in range(n):
        mag = rng.randrange(cfg.acc_bits)
        acc = rng.randrange(-(1 << mag), 1 << mag)
        bias = rng.randrange(-lim, lim + 1) if rng.random() < 0.3 else rng.randrange(-999, 1000)
        out.append((acc, bias, rng.randrange(cfg.max_shift + 1), rng.randrange(2),
                    rng.randrange(2)))
    return out


def _expected(cfg: HwConfig, items: list[Item]) -> list[int]:
    return [ref_requant(a, b, s, bool(lk), bool(h), cfg) for a, b, s, lk, h in items]


def _packed(cfg: HwConfig, items: list[Item]) -> list[int]:
    lay = requant_in_layout(cfg)
    return [pack(lay, {"acc": a, "bias": b, "shift": s, "leaky": lk, "head": h})
            for a, b, s, lk, h in items]


def _signed(raw: int, bits: int) -> int:
    return raw - (1 << bits) if raw >> (bits - 1) else raw


@cocotb.test()
async def requant_corners_and_random(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    items = corner_cases(cfg) + random_cases(cfg, rng, p["n_random"])
    rng.shuffle(items)
    await start(dut)
    sink = Sink("o", len(items), stall=p["stall"])
    await run_streams(dut, [Source("i", _packed(cfg, items), idle=p["idle"])], [sink], rng,
                      max_cycles=20 * len(items) + 100)
    got = [_signed(r, cfg.head_bits) for r in sink.got]
    compare("requant", _expected(cfg, items), got)


@cocotb.test()
async def requant_latency_and_throughput(dut: Any) -> None:
    cfg = config()
    rng = random.Random(1)
    items = random_cases(cfg, rng, 64)
    await start(dut)
    sink = Sink("o", len(items))
    cycles = await run_streams(dut, [Source("i", _packed(cfg, items))], [sink], rng,
                               max_cycles=1000, drain=0)
    compare("requant", _expected(cfg, items), [_signed(r, cfg.head_bits) for r in sink.got])
    # The first item is shown in cycle 1 and taken at the edge that ends it; its result is
    # valid REQUANT_LATENCY edges later, then one result per cycle.
    assert sink.cycles[0] == 1 + REQUANT_LATENCY, sink.cycles[:4]
    assert sink.cycles[-1] - sink.cycles[0] == len(items) - 1, "not one result per cycle"
    assert cycles == sink.cycles[-1]


CONFIGS = {
    "default": DEFAULT,
    "acc24-head12-shift4": HwConfig(acc_bits=24, head_bits=12, shift_bits=4, array_rows=4,
                                    array_cols=4),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_requant(name: str) -> None:
    from harness import run_block

    cfg = CONFIGS[name]
    run_block(Requantizer(cfg), "requant", "base", cfg, "test_requant",
              {"seed": 1000 + len(name), "n_random": 3000, "idle": 0.3, "stall": 0.3},
              seed=7)
