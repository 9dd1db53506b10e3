"""BankedMemory (hw/bankmem.py) against a word-list model: seeded random reads and writes,
reads stalled by `rd_en`, same-address read and write on one edge, partial writes."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator

from hw.bankmem import READ_LATENCY, BankedMemory, bank_geometry


def _run(dut: BankedMemory, seed: int, cycles: int = 600) -> None:
    rng = random.Random(seed)
    lanes = dut.wr_en.shape().width
    bits = Shape.cast(dut.shape).width
    lane_bits = bits // lanes
    mem = [0] * dut.depth
    pipe = [0] * READ_LATENCY               # pipe[0]: the RAM's output, pipe[-1]: rd_data
    hot = max(1, dut.depth // 4)            # a quarter of the addresses take most accesses

    def pick() -> int:
        return rng.randrange(hot) if rng.random() < 0.5 else rng.randrange(dut.depth)

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for t in range(cycles):
            wa, ra = pick(), pick()
            if rng.random() < 0.2:
                ra = wa                     # same address on one edge: the old word
            wd = rng.getrandbits(bits)
            we = rng.getrandbits(lanes) if rng.random() < 0.6 else 0
            re = int(rng.random() < 0.7)
            ctx.set(dut.wr_addr, wa)
            ctx.set(dut.wr_data.as_value() if lanes > 1 else dut.wr_data, wd)
            ctx.set(dut.wr_en, we)
            ctx.set(dut.rd_addr, ra)
            ctx.set(dut.rd_en, re)
            await ctx.tick()
            if re:
                pipe[1:] = pipe[:-1]
                pipe[0] = mem[ra]
            if lanes == 1:
                if we:
                    mem[wa] = wd
            else:
                for k in range(lanes):
                    if we >> k & 1:
                        mask = ((1 << lane_bits) - 1) << (k * lane_bits)
                        mem[wa] = (mem[wa] & ~mask) | (wd & mask)
            got = ctx.get(dut.rd_data.as_value() if lanes > 1 else dut.rd_data)
            got &= (1 << bits) - 1
            assert got == pipe[-1], (
                f"cycle {t}: rd_data expected {pipe[-1]:#x}, got {got:#x} "
                f"(banks {dut.banks} x {dut.bank_depth})")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("depth", "bank_bits"), [
    (37, 64),           # 8-word banks, a short last bank (5 banks)
    (32, 64),           # exact multiple (4 banks)
    (6, 64),            # one bank, shallower than a block RAM
    (1, 64),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_banked_memory_plain(depth, bank_bits, seed):
    _run(BankedMemory(signed(8), depth, bank_bits=bank_bits), seed)


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_banked_memory_lanes(seed):
    dut = BankedMemory(data.ArrayLayout(unsigned(8), 2), 20, granularity=1, bank_bits=128)
    assert (dut.bank_depth, dut.banks, dut.wr_en.shape().width) == (8, 3, 2)
    _run(dut, seed)


def test_bank_geometry():
    assert bank_geometry(8, 37, 64) == (8, 5)
    assert bank_geometry(8, 6, 64) == (8, 1)
    assert bank_geometry(8, 1, 64) == (1, 1)
    # 16-bit words: 1024 per DP16KD / RAMB18; 8-bit words: 2048
    assert bank_geometry(16, 10240) == (1024, 10)
    assert bank_geometry(8, 10240) == (2048, 5)
    assert bank_geometry(8, 300) == (512, 1)
    with pytest.raises(ValueError, match="depth"):
        bank_geometry(8, 0)
