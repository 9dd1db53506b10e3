"""LinkArbiter (hw/eth/arbiter.py) in the Amaranth simulator: two links sending at once
(garbage between frames, random gaps, random backpressure on the device and both links'
outputs) to a stand-in device that parses bytes as the device's receiver does (SYNC
hunting, LENGTH_TOO_LONG at the length, TIMEOUT on a stalled frame) and answers each frame
with DATA frames and an OK (or an ERROR). Each link must get exactly the replies to its own
requests in order, and the device exactly each link's frames, whole and in order; then
the device's own link layer and decoder behind the arbiter."""

from __future__ import annotations

import random
import struct

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from hw.eth.arbiter import LinkArbiter
from hw.spec import protocol
from hw.spec.config import DEFAULT as DEFAULT_CFG
from hw.spec.protocol import Err, Op, Reply
from hw.top import DeviceTop
from tests.hwbench import simulate

MAX = 64                                    # the arbiter's and the stand-in's max payload
DEV_TIMEOUT = 150                           # the stand-in's inter-byte timeout, in cycles


def answer(frame: bytes) -> bytes:
    """The stand-in device's reply to a good request frame: payload[0] % 3 DATA frames,
    then an OK carrying the frame's CRC bytes and length."""
    payload = frame[5:-2]
    n = payload[0] % 3 if payload else 0
    out = b"".join(protocol.encode_frame(Reply.DATA, bytes([k]) * (7 + k)) for k in range(n))
    return out + protocol.encode_frame(Reply.OK, frame[-2:] + struct.pack("<H", len(payload)))


def error(code: Err, op: int) -> bytes:
    return protocol.encode_frame(Reply.ERROR, bytes([code, op]))


def request(rng: random.Random, tag: int) -> bytes:
    """A request whose payload starts with the link's tag and is unique per link."""
    body = bytes([rng.randrange(256), tag]) + bytes(rng.randrange(256)
                                                     for _ in range(rng.randrange(0, MAX - 2)))
    return protocol.encode_frame(Op.ECHO, body)


def garbage(rng: random.Random) -> bytes:
    """Bytes with no SYNC in them (perhaps ending in SYNC's first byte)."""
    g = bytes(rng.choice([b for b in range(256) if b != protocol.SYNC[0]])
              for _ in range(rng.choice([0, 0, 1, 3, 9])))
    return g + (protocol.SYNC[:1] * rng.randrange(3) if rng.random() < 0.3 else b"")


def _run(seed: int, streams: list[list[tuple[bytes, int]]], expected: list[bytes],
         frames: list[list[bytes]], gap: float, stall: float, cycles: int) -> None:
    """`streams[i]`: link i's byte chunks, each sent after a pause of the given cycles (with
    random gaps `gap`); `expected[i]`: the bytes link i must receive; `frames[i]`: the
    frames of link i the device must receive (whole, in order)."""
    rng = random.Random(seed ^ 0x5A5A)
    dut = LinkArbiter(max_payload=MAX)
    rx = (dut.rx0, dut.rx1)
    tx = (dut.tx0, dut.tx1)
    got = [bytearray(), bytearray()]
    seen: list[bytes] = []
    done = [False, False]

    def sender(i: int):  # type: ignore[no-untyped-def]
        async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
            for chunk, pause in streams[i]:
                await ctx.tick().repeat(pause + 1)
                for b in chunk:
                    while rng.random() < gap:
                        ctx.set(rx[i].valid, 0)
                        await ctx.tick()
                    ctx.set(rx[i].valid, 1)
                    ctx.set(rx[i].payload, b)
                    await ctx.tick().until(rx[i].ready)
                ctx.set(rx[i].valid, 0)
            done[i] = True
        return bench

    def receiver(i: int):  # type: ignore[no-untyped-def]
        async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
            while len(got[i]) < len(expected[i]):
                ready = rng.random() >= stall
                ctx.set(tx[i].ready, int(ready))
                _, _, valid, data = await ctx.tick().sample(tx[i].valid, tx[i].payload)
                if ready and valid:
                    got[i].append(data)
            ctx.set(tx[i].ready, 0)
            for _ in range(200):            # nothing more comes
                ctx.set(tx[i].ready, 1)
                _, _, valid = await ctx.tick().sample(tx[i].valid)
                assert not valid, f"link {i}: a byte past its replies"
        return bench

    async def device(ctx) -> None:  # type: ignore[no-untyped-def]
        """The device's receiver and reply sender, byte by byte."""
        buf, state, idle, out = bytearray(), "S0", 0, bytearray()
        while True:
            take = not out and rng.random() >= stall
            ctx.set(dut.dev_rx.ready, int(take))
            ctx.set(dut.dev_tx.valid, int(bool(out)))
            if out:
                ctx.set(dut.dev_tx.payload, out[0])
            _, _, valid, byte, tready = await ctx.tick().sample(
                dut.dev_rx.valid, dut.dev_rx.payload, dut.dev_tx.ready)
            if out:
                if tready:
                    del out[0]
                continue
            if state not in ("S0", "S1"):
                idle = 0 if (take and valid) else idle + 1
                if idle > DEV_TIMEOUT:
                    out += error(Err.TIMEOUT, buf[2] if len(buf) > 2 else 0)
                    state, buf = "S0", bytearray()
                    continue
            if not (take and valid):
                continue
            if state == "S0":
                assert byte == protocol.SYNC[0], f"device got {byte:#x} outside a frame"
                state, buf = "S1", bytearray([byte])
            elif state == "S1":
                assert byte == protocol.SYNC[1], f"device got {byte:#x} after SYNC0"
                state = "F"
                buf.append(byte)
            else:
                buf.append(byte)
                if len(buf) == 5:
                    n = buf[3] | buf[4] << 8
                    if n > MAX:
                        out += error(Err.LENGTH_TOO_LONG, buf[2])
                        seen.append(bytes(buf))
                        state = "S0"
                        continue
                if len(buf) >= 5 and len(buf) == 5 + (buf[3] | buf[4] << 8) + 2:
                    seen.append(bytes(buf))
                    out += answer(bytes(buf))
                    state = "S0"

    simulate(dut, [sender(0), sender(1), receiver(0), receiver(1)], cycles,
             processes=[device])
    for i in range(2):
        assert bytes(got[i]) == expected[i], f"link {i}: replies differ"
        mine = [f for f in seen if any(f == g for g in frames[i])]
        assert mine == frames[i], f"link {i}: the device got other frames or order"
    assert len(seen) == len(frames[0]) + len(frames[1])


@pytest.mark.parametrize("seed,gap,stall", [(1, 0.0, 0.0), (2, 0.3, 0.2), (3, 0.6, 0.5)])
def test_both_links_random(seed: int, gap: float, stall: float) -> None:
    rng = random.Random(seed)
    streams, expected, frames = [], [], []
    for i in range(2):
        reqs = [request(rng, i) for _ in range(12)]
        streams.append([(garbage(rng) + r, rng.choice([0, 0, 5, 40])) for r in reqs])
        expected.append(b"".join(answer(r) for r in reqs))
        frames.append(reqs)
    _run(seed, streams, expected, frames, gap, stall, 60_000)


def test_too_long_timeout_and_fairness() -> None:
    """Link 0: a length past MAX (answered LENGTH_TOO_LONG, the rest of it hunted as
    garbage), a frame that stops after its length (the device's TIMEOUT; its late rest
    hunted), then good frames; link 1 sends good frames all the while."""
    rng = random.Random(9)
    good0 = [request(rng, 0) for _ in range(3)]
    good1 = [request(rng, 1) for _ in range(6)]
    too_long = protocol.SYNC + bytes([Op.ECHO]) + struct.pack("<H", MAX + 1)
    rest = bytes(range(0x10, 0x30))
    stalled = protocol.encode_frame(Op.ECHO, b"\x01\x00abc")
    streams = [[(too_long + rest, 0), (good0[0], 0), (stalled[:5], 0),
                (stalled[5:], DEV_TIMEOUT * 6), (good0[1] + good0[2], 0)],
               [(r, 10) for r in good1]]
    expected = [error(Err.LENGTH_TOO_LONG, Op.ECHO) + answer(good0[0])
                + error(Err.TIMEOUT, Op.ECHO) + answer(good0[1]) + answer(good0[2]),
                b"".join(answer(r) for r in good1)]
    frames = [[too_long, *good0], good1]
    _run(9, streams, expected, frames, 0.1, 0.1, 60_000)


def test_real_device_on_both_links() -> None:
    """The device's own link layer and decoder (`DeviceTop` without the engine) behind the
    arbiter: both links send ECHOs (with garbage between them) and one a frame with a bad
    CRC, at once; each gets exactly its own replies (the ECHO's payload back, BAD_CRC)."""
    rng = random.Random(5)
    arb = LinkArbiter()
    dev = DeviceTop(DEFAULT_CFG, timeout_cycles=400, engine=False)
    top = Module()
    top.submodules.arb, top.submodules.dev = arb, dev
    wiring.connect(top, arb.dev_rx, dev.rx)
    wiring.connect(top, dev.tx, arb.dev_tx)
    links = ((arb.rx0, arb.tx0), (arb.rx1, arb.tx1))
    sends, expected, got = [], [], [bytearray(), bytearray()]
    for i in range(2):
        echoes = [bytes([i]) + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
                  for _ in range(6)]
        bad = bytearray(protocol.encode_frame(Op.ECHO, b"xyz"))
        bad[-1] ^= 0xFF
        frames = [protocol.encode_frame(Op.ECHO, e) for e in echoes]
        frames.insert(3, bytes(bad))
        sends.append(b"".join(garbage(rng) + f for f in frames))
        replies = [protocol.encode_frame(Reply.OK, e) for e in echoes]
        replies.insert(3, error(Err.BAD_CRC, Op.ECHO))
        expected.append(b"".join(replies))

    def sender(i: int):  # type: ignore[no-untyped-def]
        async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
            rx = links[i][0]
            for b in sends[i]:
                while rng.random() < 0.3:
                    ctx.set(rx.valid, 0)
                    await ctx.tick()
                ctx.set(rx.valid, 1)
                ctx.set(rx.payload, b)
                await ctx.tick().until(rx.ready)
            ctx.set(rx.valid, 0)
        return bench

    def receiver(i: int):  # type: ignore[no-untyped-def]
        async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
            tx = links[i][1]
            while len(got[i]) < len(expected[i]):
                ready = rng.random() >= 0.3
                ctx.set(tx.ready, int(ready))
                _, _, valid, data = await ctx.tick().sample(tx.valid, tx.payload)
                if ready and valid:
                    got[i].append(data)
        return bench

    simulate(top, [sender(0), sender(1), receiver(0), receiver(1)], 40_000)
    for i in range(2):
        assert bytes(got[i]) == expected[i], f"link {i}: replies differ"
