"""The Accelerator (hw/accel.py: sequencer, pass reader and writer, engine, arbiter) runs a
compiled program from a memory model: the memory afterwards equals the reference
program's (tests/reference.ref_program) byte for byte, the trace records are written,
and bad programs stop with their error before touching memory."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.accel import Accelerator
from hw.spec import intmath
from hw.spec.config import HwConfig
from hw.spec.memory import PASS_BYTES, TRACE_BYTES, TRACE_FORMAT, Pass
from hw.spec.protocol import Err
from sw.runtime.darknet import parse_cfg
from sw.runtime.program import compile_network
from tests.conftest import random_images, random_params, small_bundle
from tests.memmodel import MemModel
from tests.reference import ref_program

#: Every kind of pass in a few thousand cycles: a fused max pool, a conv that a route and
#: a standalone max pool both read, an upsampled conv, a concatenation, a head.
TINY_CFG = """
[net]
width=8
height=8
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[upsample]
stride=2

[route]
layers = -1, 2

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask = 0,1,2
anchors = 2,3,  4,5,  6,7
classes=1
num=3
"""

CFG = HwConfig(mem_bytes=1 << 16)


def tiny_network():
    """The tiny network, a bundle of it (random weights) and its compiled program."""
    from sw.quant.model import FloatModel

    net = parse_cfg(TINY_CFG, "tiny.cfg")
    bundle = small_bundle(net, FloatModel(net, random_params(net, seed=3)).eval(), hw=CFG)
    return net, bundle, compile_network(bundle, CFG)


@pytest.fixture(scope="module")
def tiny():
    return tiny_network()


def _run(image, mem: np.ndarray, addr: int, count: int, trace: int, seed: int,
         stall: float = 0.2, limit: int = 200_000) -> dict:
    dut = Accelerator(CFG)
    model = MemModel(dut.mem, CFG, mem, seed, stall=stall)
    result = {}

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.run.payload, {"addr": addr, "count": count, "trace": trace})
        ctx.set(dut.run.valid, 1)
        _, _, ready = await ctx.tick().sample(dut.run.ready)
        assert ready
        ctx.set(dut.run.valid, 0)
        for _ in range(limit):
            await ctx.tick()
            if not ctx.get(dut.progress.running):
                break
        else:
            raise AssertionError(f"the program still runs after {limit} cycles")
        for _ in range(20):
            await ctx.tick()
        for field in ("done", "error", "passes", "cycles"):
            result[field] = ctx.get(getattr(dut.progress, field))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(model.serve, background=True)
    sim.add_testbench(bench)
    sim.run()
    return result


@pytest.mark.parametrize(("seed", "stall"), [(2, 0.3)])
def test_program_runs_bit_exact(tiny, seed, stall) -> None:
    net, _, image = tiny
    mem = np.zeros(CFG.mem_bytes, np.uint8)
    mem[:image.end] = image.memory()
    x = intmath.quantize_input(random_images(1, net.width, seed=seed)[0])
    image.input.write(mem, x)
    want = ref_program(mem.copy(), image.passes, CFG)
    trace = image.end
    res = _run(image, mem, image.program_addr, len(image.passes), trace, seed, stall)
    assert res["done"] == 1 and res["error"] == Err.NONE and res["passes"] == len(image.passes)
    diff = np.flatnonzero(mem[:image.end] != want[:image.end])
    assert diff.size == 0, (f"{diff.size} bytes differ, first at {diff[0]:#x}: expected "
                            f"{want[diff[0]]}, got {mem[diff[0]]}")
    records = [struct.unpack_from(TRACE_FORMAT, mem, trace + k * TRACE_BYTES)
               for k in range(len(image.passes))]
    assert all(total > engine > 0 for total, engine in records)
    assert sum(total for total, _ in records) <= res["cycles"]
    assert not mem[trace + len(records) * TRACE_BYTES:].any()


def test_bad_programs_stop_before_touching_memory(tiny) -> None:
    _, _, image = tiny
    base = np.zeros(CFG.mem_bytes, np.uint8)
    base[:image.end] = image.memory()
    good = image.passes[0]

    def with_pass(p: Pass) -> np.ndarray:
        mem = base.copy()
        mem[image.program_addr:image.program_addr + PASS_BYTES] = np.frombuffer(p.encode(),
                                                                                np.uint8)
        return mem

    cases = [
        (Pass(**{**good.__dict__, "width": 500}), Err.BAD_PROGRAM),       # past max_width
        (Pass(**{**good.__dict__, "width": 1000}), Err.BAD_PROGRAM),      # past 9 bits
        (Pass(**{**good.__dict__, "in_addr": CFG.mem_bytes - 8}), Err.BAD_ADDRESS),
        (Pass(**{**good.__dict__, "out_addr": CFG.mem_bytes - 8}), Err.BAD_ADDRESS),
        (Pass(**{**good.__dict__, "param_addr": CFG.mem_bytes - CFG.param_beat}),
         Err.BAD_ADDRESS),
        # A parameter block that is not the group's: short, long, misaligned.
        (Pass(**{**good.__dict__, "param_len": good.param_len - CFG.array_cols}),
         Err.BAD_PROGRAM),
        (Pass(**{**good.__dict__, "param_len": good.param_len + CFG.array_cols}),
         Err.BAD_PROGRAM),
        (Pass(**{**good.__dict__, "param_len": CFG.mem_bytes}), Err.BAD_PROGRAM),
        (Pass(**{**good.__dict__, "param_addr": good.param_addr + 1}), Err.BAD_PROGRAM),
    ]
    for p, err in cases:
        mem = with_pass(p)
        before = mem.copy()
        res = _run(image, mem, image.program_addr, 1, image.end, 0, limit=2000)
        assert res["error"] == err and res["done"] == 0 and res["passes"] == 0, (p, res)
        assert np.array_equal(mem, before)
    mem = base.copy()
    res = _run(image, mem, image.program_addr, 0, image.end, 0, limit=100)
    assert res["error"] == Err.BAD_PROGRAM
    res = _run(image, mem, CFG.mem_bytes - 16, 1, image.end, 0, limit=100)
    assert res["error"] == Err.BAD_ADDRESS
