"""RangeReader and RangeWriter (hw/dma.py) and MemArbiter (hw/memport.py) against a
memory model (tests/memmodel.py): any alignment and length, random memory stalls and
latency, random gaps on the inputs and backpressure on the outputs."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.dma import RangeReader, RangeWriter
from hw.memport import MemArbiter
from hw.spec.config import HwConfig
from tests.memmodel import MemModel

CFG = HwConfig(mem_bytes=4096)
NARROW = HwConfig(mem_bytes=1024, mem_data_bits=32)


def _ranges(rng: random.Random, cfg: HwConfig, n: int) -> list[tuple[int, int]]:
    wb, out = cfg.mem_word_bytes, []
    for _ in range(n):
        length = rng.choice([1, 2, wb - 1, wb, wb + 1, 3 * wb, rng.randint(1, 5 * wb)])
        addr = rng.randrange(0, cfg.mem_bytes - length)
        out.append((addr, length))
    return out


def _run(dut, mems: list[tuple], benches: list, cycles_limit: int = 200_000) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for model in mems:
        sim.add_testbench(model.serve, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


def _read_bench(reader, ranges, rng, gap: float, stall: float, got: list):
    """Ranges (addr, len) or (addr, len, wide) in, every beat out (data, last) to `got`."""
    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        pending = list(ranges)
        want = sum(r[1] // reader.lanes if r[2:] == (1,) else r[1] for r in ranges)
        t = 0
        while len(got) < want:
            assert t < 100 * want + 1000, f"stuck after {len(got)} of {want} bytes"
            offer = bool(pending) and rng.random() >= gap
            ctx.set(reader.ranges.valid, int(offer))
            if offer:
                a, n, *wide = pending[0]
                ctx.set(reader.ranges.payload, {"addr": a, "len": n, "wide": sum(wide)})
            take = rng.random() >= stall
            ctx.set(reader.o.ready, int(take))
            _, _, r_ready, o_valid, o_payload = await ctx.tick().sample(
                reader.ranges.ready, reader.o.valid, reader.o.payload)
            t += 1
            if offer and r_ready:
                pending.pop(0)
            if o_valid and take:
                got.append((int(o_payload.data), int(o_payload.last)))
        ctx.set(reader.ranges.valid, 0)
        for _ in range(30):
            _, _, o_valid = await ctx.tick().sample(reader.o.valid)
            assert not o_valid, "a byte after the last range"
        assert not ctx.get(reader.busy)
    return bench


@pytest.mark.parametrize(("cfg", "seed", "gap", "stall", "mstall"), [
    (CFG, 1, 0.0, 0.0, 0.0), (CFG, 2, 0.5, 0.3, 0.3), (CFG, 3, 0.1, 0.7, 0.5),
    (NARROW, 4, 0.2, 0.2, 0.2), (NARROW, 5, 0.0, 0.0, 0.0)])
def test_range_reader(cfg, seed, gap, stall, mstall) -> None:
    rng = random.Random(seed)
    mem = np.random.default_rng(seed).integers(0, 256, cfg.mem_bytes, dtype=np.uint8)
    dut = RangeReader(cfg, depth=8)
    ranges = _ranges(rng, cfg, 40)
    got: list[tuple[int, int]] = []
    model = MemModel(dut.mem, cfg, mem, seed, stall=mstall)
    _run(dut, [model], [_read_bench(dut, ranges, rng, gap, stall, got)])
    want = [(int(b), int(k == n - 1)) for a, n in ranges for k, b in enumerate(mem[a:a + n])]
    diff = next((k for k, (x, y) in enumerate(zip(got, want, strict=True)) if x != y), None)
    assert diff is None, f"byte {diff}: expected {want[diff]}, got {got[diff]}"


@pytest.mark.parametrize(("seed", "stall", "mstall"), [(21, 0.0, 0.0), (22, 0.4, 0.3)])
def test_range_reader_wide_beats(seed, stall, mstall) -> None:
    """Wide ranges (beats of 4 bytes, aligned) mixed with byte ranges."""
    cfg, lanes = CFG, 4
    rng = random.Random(seed)
    mem = np.random.default_rng(seed).integers(0, 256, cfg.mem_bytes, dtype=np.uint8)
    dut = RangeReader(cfg, depth=8, lanes=lanes)
    ranges: list[tuple[int, int, int]] = []
    for a, n in _ranges(rng, cfg, 40):
        wide = rng.random() < 0.6
        if wide:
            a, n = a // lanes * lanes, max(n // lanes, 1) * lanes
        ranges.append((a, n, int(wide)))
    got: list[tuple[int, int]] = []
    model = MemModel(dut.mem, cfg, mem, seed, stall=mstall)
    _run(dut, [model], [_read_bench(dut, ranges, rng, 0.2, stall, got)])
    want = []
    for a, n, wide in ranges:
        step = lanes if wide else 1
        for k in range(0, n, step):
            want.append((int.from_bytes(bytes(mem[a + k:a + k + step]), "little"),
                         int(k + step == n)))
    diff = next((k for k, (x, y) in enumerate(zip(got, want, strict=True)) if x != y), None)
    assert diff is None, f"beat {diff}: expected {want[diff]}, got {got[diff]}"


def test_range_reader_rejects_odd_lanes() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RangeReader(CFG, lanes=3)


def test_range_reader_full_throughput() -> None:
    """A long range with a memory that never stalls: one byte per cycle once started."""
    cfg = CFG
    mem = np.arange(cfg.mem_bytes, dtype=np.uint8)
    dut = RangeReader(cfg, depth=8)
    got: list[tuple[int, int]] = []
    model = MemModel(dut.mem, cfg, mem, 0, latency=(2, 2))
    _run(dut, [model], [_read_bench(dut, [(5, 600)], random.Random(0), 0.0, 0.0, got)])
    assert [b for b, _ in got] == list(mem[5:605])
    assert model.cycles < 600 + 60


def _write_bench(writer, ranges, data, rng, gap: float, idle: float):
    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        pending, pos, t = list(ranges), 0, 0
        while pending or pos < len(data):
            assert t < 100 * len(data) + 1000, f"stuck at byte {pos} of {len(data)}"
            offer = bool(pending) and rng.random() >= gap
            ctx.set(writer.ranges.valid, int(offer))
            if offer:
                ctx.set(writer.ranges.payload, {"addr": pending[0][0], "len": pending[0][1]})
            show = pos < len(data) and rng.random() >= idle
            ctx.set(writer.i.valid, int(show))
            if show:
                ctx.set(writer.i.payload, int(data[pos]))
            _, _, r_ready, i_ready = await ctx.tick().sample(writer.ranges.ready,
                                                             writer.i.ready)
            t += 1
            if offer and r_ready:
                pending.pop(0)
            if show and i_ready:
                pos += 1
        ctx.set(writer.i.valid, 0)
        ctx.set(writer.ranges.valid, 0)
        while ctx.get(writer.busy):
            await ctx.tick()
            t += 1
            assert t < 100 * len(data) + 2000, "the writer does not finish"
        for _ in range(10):       # the memory model applies the last words
            await ctx.tick()
    return bench


@pytest.mark.parametrize(("cfg", "seed", "gap", "idle", "mstall"), [
    (CFG, 11, 0.0, 0.0, 0.0), (CFG, 12, 0.4, 0.3, 0.4), (NARROW, 13, 0.1, 0.5, 0.6),
    (NARROW, 14, 0.0, 0.0, 0.0)])
def test_range_writer(cfg, seed, gap, idle, mstall) -> None:
    rng = random.Random(seed)
    before = np.random.default_rng(seed).integers(0, 256, cfg.mem_bytes, dtype=np.uint8)
    ranges = _ranges(rng, cfg, 30)
    data = np.random.default_rng(seed + 1).integers(0, 256, sum(n for _, n in ranges),
                                                    dtype=np.uint8)
    want = before.copy()
    pos = 0
    for a, n in ranges:
        want[a:a + n] = data[pos:pos + n]
        pos += n
    mem = before.copy()
    dut = RangeWriter(cfg)
    model = MemModel(dut.mem, cfg, mem, seed, stall=mstall)
    _run(dut, [model], [_write_bench(dut, ranges, data, rng, gap, idle)])
    diff = np.flatnonzero(mem != want)
    assert diff.size == 0, (f"{diff.size} bytes differ, first at {diff[0]:#x}: expected "
                            f"{want[diff[0]]}, got {mem[diff[0]]} (bytes outside the ranges "
                            "must stay as they were)")
    assert model.writes == sum((a + n - 1) // cfg.mem_word_bytes - a // cfg.mem_word_bytes + 1
                               for a, n in ranges)


class _Pair(wiring.Component):
    """A reader and a writer sharing one port through the arbiter."""

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        self.reader = RangeReader(cfg, depth=8)
        self.writer = RangeWriter(cfg)
        self.reader2 = RangeReader(cfg, depth=4)
        self.arb = MemArbiter(cfg, 3, depth=8, burst=4)
        super().__init__({"mem": wiring.Out(self.arb.mem.signature.flip().flip())})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.reader = self.reader
        m.submodules.writer = self.writer
        m.submodules.reader2 = self.reader2
        m.submodules.arb = self.arb
        for k, master in enumerate((self.reader, self.writer, self.reader2)):
            wiring.connect(m, master.mem, self.arb.masters[k])
        wiring.connect(m, self.arb.mem, wiring.flipped(self.mem))
        return m


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_arbiter_shares_one_port(seed) -> None:
    """Two readers of a region the writer does not touch and a writer of another, at
    once: every master's data right, the port's order kept per master."""
    cfg = CFG
    rng = random.Random(seed)
    mem = np.random.default_rng(seed).integers(0, 256, cfg.mem_bytes, dtype=np.uint8)
    orig = mem.copy()
    half = cfg.mem_bytes // 2
    rranges = [(a % half, n) for a, n in _ranges(rng, HwConfig(mem_bytes=half), 25)]
    rranges2 = [(a % half, n) for a, n in _ranges(rng, HwConfig(mem_bytes=half), 25)]
    wranges = [(half + a % half, n) for a, n in _ranges(rng, HwConfig(mem_bytes=half), 25)]
    data = np.random.default_rng(seed + 5).integers(0, 256, sum(n for _, n in wranges),
                                                    dtype=np.uint8)
    dut = _Pair(cfg)
    got: list[tuple[int, int]] = []
    got2: list[tuple[int, int]] = []
    model = MemModel(dut.mem, cfg, mem, seed, stall=0.3)
    _run(dut, [model], [_read_bench(dut.reader, rranges, random.Random(seed), 0.2, 0.2, got),
                        _read_bench(dut.reader2, rranges2, random.Random(seed + 1), 0.3, 0.1,
                                    got2),
                        _write_bench(dut.writer, wranges, data, random.Random(seed + 2), 0.1,
                                     0.1)])
    assert [b for b, _ in got] == [int(b) for a, n in rranges for b in orig[a:a + n]]
    assert [b for b, _ in got2] == [int(b) for a, n in rranges2 for b in orig[a:a + n]]
    want = orig.copy()
    pos = 0
    for a, n in wranges:
        want[a:a + n] = data[pos:pos + n]
        pos += n
    assert np.array_equal(mem, want)
