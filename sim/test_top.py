"""DeviceTop (hw/top.py, link only: engine=False) on its byte streams, cocotb + Verilator:
identify, status, every error reply, timeout of a truncated frame, resync, and a
corruption fuzz. The engine behind the link is tested through the C++ harness
(tests/test_driver.py).

Request bytes go in with random idle cycles, reply bytes are taken with random
backpressure; replies are decoded with hw.spec.protocol.FrameDecoder.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge
from streams import config, params, start

from hw.spec.protocol import (
    MAX_PAYLOAD,
    SYNC,
    Err,
    Frame,
    FrameDecoder,
    Op,
    Reply,
    Status,
    encode_frame,
)
from hw.top import identity

TIMEOUT = 300


class Bench:
    def __init__(self, dut: Any, rng: random.Random) -> None:
        self.dut, self.rng = dut, rng
        self.dec = FrameDecoder()
        self.cycle = 0

    async def exchange(self, wire: bytes, n: int | None, limit: int = 20_000) -> list[Frame]:
        """Send `wire`, return the replies once `n` arrived and 2*TIMEOUT quiet cycles
        passed (so an extra reply fails the test); `n` None: any number of replies."""
        dut, rng = self.dut, self.rng
        pos, got, quiet = 0, [], 0
        shown = False
        for _ in range(limit):
            await RisingEdge(dut.clk)
            self.cycle += 1
            if not shown and pos < len(wire) and rng.random() < 0.7:
                dut.rx__payload.value = wire[pos]
                dut.rx__valid.value = 1
                shown = True
            elif not shown:
                dut.rx__valid.value = 0
            dut.tx__ready.value = int(rng.random() < 0.7)
            await ReadOnly()
            if shown and int(dut.rx__ready.value):
                pos += 1
                shown = False
            quiet += 1
            if int(dut.tx__valid.value) and int(dut.tx__ready.value):
                got += self.dec.feed(bytes([int(dut.tx__payload.value)]))
                quiet = 0
            if pos == len(wire) and len(got) >= (n or 0) and quiet > 2 * TIMEOUT:
                await RisingEdge(dut.clk)
                dut.rx__valid.value = 0
                assert n is None or len(got) == n, f"expected {n} replies, got {got}"
                assert self.dec.errors == 0, self.dec.last_error
                return got
        raise AssertionError(f"timeout: sent {pos} of {len(wire)} bytes, {len(got)} of {n} "
                             "replies")


@cocotb.test()
async def top_protocol(dut: Any) -> None:
    cfg, p = config(), params()
    rng = random.Random(p["seed"])
    dut.rx__valid.value = 0
    await start(dut)
    b = Bench(dut, rng)
    ident = Frame(Reply.OK, identity(cfg, engine=False).encode())
    good = encode_frame(Op.IDENTIFY)

    assert await b.exchange(good, 1) == [ident]
    (st,) = await b.exchange(encode_frame(Op.STATUS), 1)
    status = Status.decode(st.payload)
    assert (status.frames_ok, status.frames_bad, status.last_error) == (1, 0, 0)
    assert 0 < status.cycles <= b.cycle + 4

    bad_crc = bytearray(encode_frame(Op.ECHO, b"abc"))
    bad_crc[5] ^= 1
    too_long = SYNC + struct.pack("<BH", Op.ECHO, MAX_PAYLOAD + 1) + b"\x00\x01"
    cases = [
        (bytes(bad_crc), Err.BAD_CRC, Op.ECHO),
        (encode_frame(0x33), Err.UNKNOWN_OPCODE, 0x33),
        (encode_frame(Op.IDENTIFY, b"\x00"), Err.BAD_LENGTH, Op.IDENTIFY),
        (encode_frame(Op.RUN, b"\x00"), Err.UNSUPPORTED, Op.RUN),
        (too_long, Err.LENGTH_TOO_LONG, Op.ECHO),
    ]
    for wire, code, op in cases:
        got = await b.exchange(wire + good, 2)
        assert got == [Frame(Reply.ERROR, bytes([code, op])), ident], (code, got)

    # truncated: silence for TIMEOUT cycles, then a TIMEOUT error; the next frame works
    assert await b.exchange(encode_frame(Op.ECHO, b"hello")[:-1], 1) == [
        Frame(Reply.ERROR, bytes([Err.TIMEOUT, Op.ECHO]))]
    assert await b.exchange(b"\x12\xa5\x00" + good, 1) == [ident]

    payload = bytes(rng.randrange(256) for _ in range(300))
    assert await b.exchange(encode_frame(Op.ECHO, payload), 1) == [Frame(Reply.OK, payload)]
    (st,) = await b.exchange(encode_frame(Op.STATUS), 1)
    status = Status.decode(st.payload)
    assert status.frames_bad == 6 and status.last_error == Err.TIMEOUT


@cocotb.test()
async def top_corruption_fuzz(dut: Any) -> None:
    """Corrupted frames: only ERROR replies or the exact echo, never a hang; a good
    IDENTIFY afterwards (sent again after a swallowing error) is answered."""
    p = params()
    rng = random.Random(p["seed"] + 1)
    dut.rx__valid.value = 0
    await start(dut)
    b = Bench(dut, rng)
    ident = Frame(Reply.OK, identity(config(), engine=False).encode())
    for trial in range(p["fuzz"]):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        wire = bytearray(encode_frame(Op.ECHO, payload))
        wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
        got = await b.exchange(bytes(wire) + encode_frame(Op.IDENTIFY), None)
        for f in got:
            assert f.opcode == Reply.ERROR or f in (ident, Frame(Reply.OK, payload)), (trial, f)
        if ident not in got:   # the IDENTIFY was swallowed by a corrupted length
            assert got and got[-1].opcode == Reply.ERROR, (trial, got)
            assert await b.exchange(encode_frame(Op.IDENTIFY), 1) == [ident], trial


def test_device_top() -> None:
    from harness import run_block

    from hw.spec.config import DEFAULT
    from hw.top import DeviceTop

    run_block(DeviceTop(DEFAULT, TIMEOUT, engine=False), "device_top", f"link-t{TIMEOUT}",
              DEFAULT, "test_top",
              {"seed": 21, "fuzz": 40}, seed=21)
