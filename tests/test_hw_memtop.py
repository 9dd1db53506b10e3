"""MemDeviceTop (hw/top/memory.py) over its byte link in the Amaranth simulator, with the
memory model behind its port: memory commands at any alignment and length, every error
reply (and memory outside a refused write untouched), BUSY while a program runs, and a
compiled program run from PROGRAM_RUN to STATUS to MEM_READ, bit-exact."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
from amaranth.sim import Simulator

from hw.spec import intmath, protocol
from hw.spec.config import HwConfig
from hw.spec.protocol import Err, Feature, FrameDecoder, Op, ProgramFlag, Reply, Status
from hw.top.memory import MemDeviceTop
from tests.conftest import random_images
from tests.memmodel import MemModel
from tests.reference import ref_program

CFG = HwConfig(mem_bytes=1 << 16)


def _session(requests: list[bytes], mem: np.ndarray, seed: int = 0, stall: float = 0.2,
             limit: int = 400_000) -> list[list[protocol.Frame]]:
    """Send each request frame, collect its reply frames (up to the OK or ERROR that ends
    it); one simulation for all of them."""
    dut = MemDeviceTop(CFG, 5000)
    model = MemModel(dut.mem, CFG, mem, seed, stall=stall)
    rng = random.Random(seed)
    replies: list[list[protocol.Frame]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        dec = FrameDecoder()
        t = 0
        for req in requests:
            data, got = list(req), []
            while not got or got[-1].opcode == Reply.DATA:
                t += 1
                assert t < limit, f"no reply to {req[:8].hex()} after {limit} cycles"
                ctx.set(dut.rx.valid, int(bool(data)))
                if data:
                    ctx.set(dut.rx.payload, data[0])
                ready = rng.random() >= stall
                ctx.set(dut.tx.ready, int(ready))
                _, _, rx_ready, tx_valid, tx_byte = await ctx.tick().sample(
                    dut.rx.ready, dut.tx.valid, dut.tx.payload)
                if data and rx_ready:
                    data.pop(0)
                if tx_valid and ready:
                    got += dec.feed(bytes([tx_byte]))
            replies.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(model.serve, background=True)
    sim.add_testbench(bench)
    sim.run()
    return replies


def _ok(frames: list[protocol.Frame]) -> bytes:
    assert frames[-1].opcode == Reply.OK, f"expected OK, got {frames[-1]}"
    assert all(f.opcode == Reply.DATA for f in frames[:-1])
    return b"".join(f.payload for f in frames)


def _err(frames: list[protocol.Frame]) -> int:
    assert len(frames) == 1 and frames[0].opcode == Reply.ERROR, frames
    return frames[0].payload[0]


def _frame(op: Op, fmt: str = "", *args: int, data: bytes = b"") -> bytes:
    return protocol.encode_frame(op, (struct.pack(fmt, *args) if fmt else b"") + data)


def test_memory_commands_and_errors() -> None:
    rng = random.Random(1)
    mem = np.zeros(CFG.mem_bytes, np.uint8)
    writes = [(rng.randrange(0, 4000), bytes(rng.getrandbits(8) for _ in range(n)))
              for n in (1, 15, 16, 17, 300, 1020)]
    reqs = [_frame(Op.IDENTIFY)]
    reqs += [_frame(Op.MEM_WRITE, "<I", a, data=d) for a, d in writes]
    reqs += [_frame(Op.MEM_READ, "<II", a, len(d)) for a, d in writes]
    reqs += [_frame(Op.MEM_CRC, "<II", a, len(d)) for a, d in writes]
    big = (100, 2600)                                     # DATA frames, then the OK
    reqs += [_frame(Op.MEM_READ, "<II", *big)]
    bad = [
        (_frame(Op.MEM_WRITE, "<I", CFG.mem_bytes - 2, data=b"abc"), Err.BAD_ADDRESS),
        (_frame(Op.MEM_WRITE, "<I", 10), Err.BAD_LENGTH),            # no data
        (_frame(Op.MEM_READ, "<II", 0, 0), Err.BAD_LENGTH),
        (_frame(Op.MEM_READ, "<I", 0), Err.BAD_LENGTH),             # truncated arguments
        (_frame(Op.MEM_READ, "<II", CFG.mem_bytes - 10, 11), Err.BAD_ADDRESS),
        (_frame(Op.MEM_CRC, "<II", 2 ** 32 - 4, 8), Err.BAD_ADDRESS),
        (_frame(Op.PROGRAM_RUN, "<IHI", 0, 0, 0), Err.BAD_PROGRAM),
        (_frame(Op.PROGRAM_RUN, "<IHI", CFG.mem_bytes - 40, 1, 0), Err.BAD_ADDRESS),
        (_frame(Op.PROGRAM_RUN, "<IHI", 0, 2, CFG.mem_bytes - 20), Err.BAD_ADDRESS),
        (_frame(Op.LAYER_CONFIG, data=bytes(12)), Err.UNSUPPORTED),
    ]
    reqs += [r for r, _ in bad]
    reqs += [_frame(Op.MEM_READ, "<II", CFG.mem_bytes - 16, 16), _frame(Op.STATUS)]
    rep = _session(reqs, mem)
    ident = protocol.Identity.decode(_ok(rep[0]))
    assert ident.features == Feature.MEMORY and ident.config_id == CFG.config_id
    want = np.zeros(CFG.mem_bytes, np.uint8)
    for a, d in writes:
        want[a:a + len(d)] = np.frombuffer(d, np.uint8)
    k = 1 + len(writes)
    for j, (a, d) in enumerate(writes):
        assert _ok(rep[1 + j]) == b""
        assert _ok(rep[k + j]) == want[a:a + len(d)].tobytes()
        assert struct.unpack("<I", _ok(rep[k + len(writes) + j]))[0] == zlib.crc32(
            want[a:a + len(d)].tobytes())
    k += 2 * len(writes)
    assert len(rep[k]) == 3 and _ok(rep[k]) == want[big[0]:sum(big)].tobytes()
    for j, (_, code) in enumerate(bad):
        assert _err(rep[k + 1 + j]) == code, (j, bad[j])
    assert _ok(rep[-2]) == bytes(16)                 # the refused write changed nothing
    assert np.array_equal(mem, want)
    st = Status.decode(_ok(rep[-1]))
    assert st.frames_bad == len(bad) and st.program == 0


def test_program_from_the_link() -> None:
    """PROGRAM_RUN of a compiled tiny network: BUSY for memory commands while it runs,
    then STATUS reports it done with every pass, and the memory equals the reference."""
    from sw.runtime.program import compile_network
    from tests.test_hw_accel import CFG as ACFG
    from tests.test_hw_accel import tiny_network

    assert ACFG == CFG
    net, bundle, image = tiny_network()
    mem = np.zeros(CFG.mem_bytes, np.uint8)
    mem[:image.end] = image.memory()
    x = intmath.quantize_input(random_images(1, net.width, seed=7)[0])
    image.input.write(mem, x)
    want = ref_program(mem.copy(), image.passes, CFG)
    assert compile_network(bundle, CFG).passes == image.passes
    run = _frame(Op.PROGRAM_RUN, "<IHI", image.program_addr, len(image.passes), image.end)
    reqs = [run, _frame(Op.MEM_READ, "<II", 0, 4), run, _frame(Op.STATUS)]
    reqs += [_frame(Op.STATUS)] * 200
    rep = _session(reqs, mem, seed=3, stall=0.1)
    assert _ok(rep[0]) == b""
    assert _err(rep[1]) == Err.BUSY and _err(rep[2]) == Err.BUSY
    states = [Status.decode(_ok(r)) for r in rep[3:]]
    assert states[0].program & ProgramFlag.RUNNING
    final = states[-1]
    assert final.program == ProgramFlag.DONE and final.program_error == Err.NONE, final
    assert final.passes == len(image.passes) and final.program_cycles > 0
    assert np.array_equal(mem[:image.end], want[:image.end])

def test_mem_mask_and_its_errors() -> None:
    """MEM_MASK against `protocol.record_mask` on records written in the memory: YOLO head
    candidates, records at odd addresses and sizes, thresholds at int16's ends; its
    refusals; the link still answers after them. (Its reply goes through MEM_READ's
    reply path, whose replies of several frames the test above covers.)"""
    rng = random.Random(2)
    mem = np.frombuffer(rng.randbytes(CFG.mem_bytes), np.uint8).copy()
    # keys near the thresholds, so that both sides of each comparison occur
    runs = [(1000, 24, 170, 8, -300), (3, 7, 5, 3, 0), (40_001, 1100, 2, 0, 100),
            (500, 1, 4, 2, -32768), (600, 17, 9, 7, 32767)]
    for addr, n, size, key, thr in runs:
        for k in range(n):
            v = max(-32768, min(32767, thr + rng.randint(-2, 2)))
            mem[addr + k * size + key:][:2] = np.frombuffer(v.to_bytes(2, "little",
                                                                        signed=True), np.uint8)
    want = mem.copy()
    reqs = [_frame(Op.MEM_MASK, protocol.MEM_MASK_FORMAT, *r) for r in runs]
    bad = [
        (_frame(Op.MEM_MASK, protocol.MEM_MASK_FORMAT, 0, 0, 4, 0, 0), Err.BAD_LENGTH),
        (_frame(Op.MEM_MASK, protocol.MEM_MASK_FORMAT, 0, 5, 4, 3, 0), Err.BAD_LENGTH),
        (_frame(Op.MEM_MASK, protocol.MEM_MASK_FORMAT, CFG.mem_bytes - 10, 3, 4, 0, 0),
         Err.BAD_ADDRESS),
        (_frame(Op.MEM_MASK, "<IHHH", 0, 5, 4, 0), Err.BAD_LENGTH),   # truncated
    ]
    reqs += [r for r, _ in bad] + [_frame(Op.MEM_READ, "<II", 3, 35), _frame(Op.STATUS)]
    rep = _session(reqs, mem, seed=3)
    for j, (addr, n, size, key, thr) in enumerate(runs):
        expected = protocol.record_mask(want[addr:addr + n * size].tobytes(), size, key, thr)
        got = _ok(rep[j])
        assert got == expected, f"run {j}: first difference at byte " \
            f"{next(k for k in range(len(got)) if got[k:k + 1] != expected[k:k + 1])}"
        if -32768 < thr < 32767 and n > 1:
            assert 0 < sum(bin(b).count("1") for b in got) < n, f"run {j}: {got.hex()}"
    for j, (_, code) in enumerate(bad):
        assert _err(rep[len(runs) + j]) == code, (j, bad[j])
    assert _ok(rep[-2]) == want[3:38].tobytes()
    assert np.array_equal(mem, want)                 # MEM_MASK writes nothing
    assert Status.decode(_ok(rep[-1])).frames_bad == len(bad)
