"""PassReader / PassWriter (hw/passio.py) against the reference of a pass's memory traffic
(tests/reference.py ref_pass_params / ref_pass_input / ref_pass_output), and Crc32
(hw/crc.py) against zlib: random memory stalls, gaps and backpressure."""

from __future__ import annotations

import dataclasses
import random
import zlib

import numpy as np
import pytest
from amaranth.hdl import Const
from amaranth.sim import Simulator

from hw.crc import Crc32
from hw.passio import PassReader, PassWriter, decode_pass, pass_layout
from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_NONE, POOL_S2, param_bytes
from hw.spec.memory import Pass
from tests.hwbench import beats
from tests.memmodel import MemModel
from tests.reference import ref_pass_input, ref_pass_output, ref_pass_params

CFG = HwConfig(mem_bytes=1 << 16, array_rows=4, array_cols=4, weight_mem_bytes=4800)


def _desc(p: Pass) -> dict:
    return {n: getattr(p, n) for n in pass_layout(CFG).members}


def _pass(rng: random.Random, *, dense: bool, head: bool = False, upsample: bool = False,
          pool: int = POOL_NONE) -> Pass:
    h, w, cin, cout, k = rng.randint(1, 5), rng.randint(1, 6), rng.randint(1, 9), \
        rng.randint(1, 8), rng.choice([1, 3])
    if pool == POOL_S2:
        h, w = 2 * h, 2 * w
    vb = 2 if head else 1
    in_pitch = cin if dense else cin + rng.randint(1, 20)
    out_pitch = cout * vb + rng.randint(0, 20)
    return Pass(width=w, height=h, cin=cin, cout=cout, k3=int(k == 3), leaky=1, head=int(head),
                pool=pool, in_pitch=in_pitch, out_pitch=out_pitch, upsample=int(upsample),
                param_addr=rng.randrange(0, 1000) * CFG.param_beat,
                param_len=param_bytes(CFG, k, cin, cout),
                in_addr=rng.randrange(8000, 12000), out_addr=rng.randrange(20000, 24000))


def _sim(dut, model, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(model.serve, background=True)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("seed", "dense", "stall", "align"), [
    (1, True, 0.0, False), (2, False, 0.3, False), (3, True, 0.5, False), (4, False, 0.0, False),
    (5, True, 0.0, True), (6, True, 0.4, True), (7, False, 0.2, True)])
def test_pass_reader(seed, dense, stall, align) -> None:
    """A dense input at a multiple of param_beat leaves in two-value transfers up to its
    last multiple of param_beat bytes; any other input, one value a transfer."""
    rng = random.Random(seed)
    mem = np.random.default_rng(seed).integers(0, 256, CFG.mem_bytes, dtype=np.uint8)
    for _ in range(3):
        p = _pass(rng, dense=dense)
        if align:
            p = dataclasses.replace(p, in_addr=p.in_addr // CFG.param_beat * CFG.param_beat)
        ref_pass_params(mem, p, CFG)                     # the block fits the pass
        want_params = beats(mem[p.param_addr:p.param_addr + p.param_len], CFG.param_beat)
        want_input = [int(v) for v in ref_pass_input(mem, p).ravel()]
        dut = PassReader(CFG, depth=8)
        got_p: list[int] = []
        got_i: list[int] = []
        twos: list[int] = []

        n_p, n_i = len(want_params), len(want_input)

        async def bench(ctx, p=p, dut=dut, got_p=got_p, got_i=got_i,  # type: ignore[no-untyped-def]
                        n_p=n_p, n_i=n_i, twos=twos) -> None:
            ctx.set(dut.desc, _desc(p))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            t = 0
            while len(got_p) < n_p or len(got_i) < n_i:
                t += 1
                assert t < 20_000, f"stuck: {len(got_p)} params, {len(got_i)} inputs"
                ctx.set(dut.params.ready, 1)                 # the engine's loader
                take = rng.random() >= stall
                ctx.set(dut.i.ready, int(take))
                _, _, pv, pp, iv, ip = await ctx.tick().sample(
                    dut.params.valid, dut.params.payload, dut.i.valid, dut.i.payload)
                if pv:
                    got_p.append(int(pp))
                if iv and take:
                    vals = [int(v) for v in ip.data]
                    got_i.extend(vals if ip.two else vals[:1])
                    twos.append(int(ip.two))
            for _ in range(20):
                await ctx.tick()
            assert not ctx.get(dut.busy) and not ctx.get(dut.err)

        _sim(dut, MemModel(dut.mem, CFG, mem, seed, stall=stall), bench)
        assert got_p == [int(v) for v in want_params]
        assert got_i == want_input
        n = len(want_input)
        pairs = p.input_pairs(CFG) and n // CFG.param_beat * CFG.param_beat // 2
        assert twos == [1] * pairs + [0] * (n - 2 * pairs)
        assert pairs or not (align and dense and n >= CFG.param_beat)


async def _start_reader(ctx, dut: PassReader, p: Pass) -> None:  # type: ignore[no-untyped-def]
    """Start the pass `p` on the reader, its parameter stream always taken."""
    ctx.set(dut.desc, _desc(p))
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)
    ctx.set(dut.params.ready, 1)


def _param_rate(depth: int | None, latency: int) -> float:
    """Parameter beats a cycle, first to last, from a memory of a fixed read latency."""
    p = Pass(width=2, height=2, cin=32, cout=8, k3=1, leaky=0, head=0, pool=0, in_pitch=32,
             out_pitch=8, upsample=0, param_addr=256, param_len=param_bytes(CFG, 3, 32, 8),
             in_addr=9000, out_addr=0)
    mem = np.random.default_rng(9).integers(0, 256, CFG.mem_bytes, dtype=np.uint8)
    dut = PassReader(CFG) if depth is None else PassReader(CFG, depth=depth)
    n = p.param_len // CFG.param_beat
    when: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        await _start_reader(ctx, dut, p)
        ctx.set(dut.i.ready, 1)
        t = 0
        while len(when) < n:
            t += 1
            assert t < 5000
            _, _, valid = await ctx.tick().sample(dut.params.valid)
            if valid:
                when.append(t)

    _sim(dut, MemModel(dut.mem, CFG, mem, 0, latency=(latency, latency)), bench)
    return (n - 1) / (when[-1] - when[0])


def test_pass_reader_runs_ahead_of_read_latency() -> None:
    """With `READ_AHEAD_WORDS` the parameter stream keeps a beat a cycle from a memory of
    LiteDRAM's read latency (24 cycles in the harness's model); 16 words ahead gave about
    0.6 beats a cycle."""
    assert _param_rate(None, 24) >= 0.98
    assert _param_rate(16, 24) < 0.7


def test_pass_reader_refuses_ranges_past_memory() -> None:
    p = Pass(width=4, height=4, cin=8, cout=4, k3=0, leaky=0, head=0, pool=0, in_pitch=8,
             out_pitch=4, upsample=0, param_addr=96, param_len=param_bytes(CFG, 1, 8, 4),
             in_addr=CFG.mem_bytes - 100, out_addr=0)
    mem = np.zeros(CFG.mem_bytes, np.uint8)
    dut = PassReader(CFG, depth=8)

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        await _start_reader(ctx, dut, p)
        for _ in range(200):
            await ctx.tick()
        assert ctx.get(dut.err) and not ctx.get(dut.busy)

    model = MemModel(dut.mem, CFG, mem, 0)
    _sim(dut, model, bench)
    wb = CFG.mem_word_bytes       # the parameter block's words only: the input is past
    assert model.reads == (p.param_addr + p.param_len - 1) // wb - p.param_addr // wb + 1


@pytest.mark.parametrize(("seed", "head", "upsample", "pool", "stall"), [
    (11, False, False, POOL_NONE, 0.0), (12, True, False, POOL_NONE, 0.3),
    (16, True, False, POOL_NONE, 0.0),
    (13, False, True, POOL_NONE, 0.2), (14, False, False, POOL_S2, 0.5),
    (15, False, True, POOL_S2, 0.0)])
def test_pass_writer(seed, head, upsample, pool, stall) -> None:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    mem = nrng.integers(0, 256, CFG.mem_bytes, dtype=np.uint8)
    for _ in range(3):
        p = _pass(rng, dense=True, head=head, upsample=upsample, pool=pool)
        oh, ow = p.out_shape
        lim = (1 << (CFG.head_bits - 1)) if head else 128
        y = nrng.integers(-lim, lim, (oh, ow, p.cout))
        want = mem.copy()
        ref_pass_output(want, p, y, CFG)
        dut = PassWriter(CFG)
        vals = [int(v) for v in y.ravel()]

        async def bench(ctx, p=p, dut=dut, vals=vals) -> None:  # type: ignore[no-untyped-def]
            ctx.set(dut.desc, _desc(p))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            pos = t = 0
            while pos < len(vals):
                t += 1
                assert t < 50_000, f"stuck at value {pos} of {len(vals)}"
                show = rng.random() >= stall
                ctx.set(dut.i.valid, int(show))
                if show:
                    ctx.set(dut.i.payload, vals[pos])
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if show and ready:
                    pos += 1
            ctx.set(dut.i.valid, 0)
            if not stall and not upsample:            # a byte a cycle, pixels back to back
                assert t <= len(vals) * (2 if head else 1) + 8, (t, len(vals))
            while ctx.get(dut.busy):
                await ctx.tick()
            for _ in range(20):
                await ctx.tick()
            assert not ctx.get(dut.err)

        _sim(dut, MemModel(dut.mem, CFG, mem, seed, stall=stall), bench)
        diff = np.flatnonzero(mem != want)
        assert diff.size == 0, (f"{p}: {diff.size} bytes differ, first at {diff[0]:#x}: "
                                f"expected {want[diff[0]]}, got {mem[diff[0]]}")


def test_decode_pass_and_fields_that_do_not_fit() -> None:
    from amaranth.hdl import Module

    rng = random.Random(5)
    good = _pass(rng, dense=False)
    bad = Pass(**{**good.__dict__, "width": 1000})       # past max_width's 9 bits
    for p, fits_want in ((good, 1), (bad, 0)):
        m = Module()
        raw = Const(int.from_bytes(p.encode(), "little"), 8 * len(p.encode()))
        view, fits = decode_pass(CFG, m, raw)

        async def bench(ctx, view=view, fits=fits, p=p, fits_want=fits_want) -> None:  # type: ignore[no-untyped-def]
            assert ctx.get(fits) == fits_want
            if fits_want:
                for name in pass_layout(CFG).members:
                    assert ctx.get(getattr(view, name)) == getattr(p, name), name

        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()


def test_crc32_matches_zlib() -> None:
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _ in range(300))
    assert protocol.crc32(data) == zlib.crc32(data)
    crc = protocol.CRC32_INIT
    for byte in data:
        crc = protocol.crc32_update(crc, byte)
    assert crc ^ 0xFFFFFFFF == zlib.crc32(data)
    dut = Crc32()

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for chunk in (data[:1], data[:100], data):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for byte in chunk:
                if rng.random() < 0.3:                    # gaps
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, byte)
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
            assert ctx.get(dut.value) == zlib.crc32(chunk)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
