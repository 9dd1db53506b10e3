"""UdpBridge (hw/eth/bridge.py) in the Amaranth simulator against a model of the sequence
rules (`hw.spec.udp`): seeded random conversations of next, repeated, stale, other-session
and malformed datagrams, with random gaps on the UDP input, random backpressure on the
device's input and the UDP output, and a stand-in device that answers each frame with DATA
frames and an OK. Every reply datagram must equal the model's byte for byte, and the device
must receive exactly the requests the model runs, once each, in order."""

from __future__ import annotations

import random

import pytest

from hw.eth.bridge import UdpBridge
from hw.spec import protocol, udp
from hw.spec.protocol import Op, Reply
from tests.hwbench import simulate

IP, PORT, LOCAL = 0xC0A80101, 40000, 7777


def device_reply(frame: bytes) -> bytes:
    """The stand-in device's reply frames to one request frame: payload[0] % 3 DATA frames
    of payload[1] % 48 bytes (3 * payload[1] if payload[0] is 254), then an OK with the
    payload reversed."""
    payload = frame[5:-2]
    out = b""
    if payload:
        b = payload[1 % len(payload)]
        size = 3 * b if payload[0] == 254 else b % 48
        for k in range(payload[0] % 3):
            out += protocol.encode_frame(Reply.DATA, bytes([k]) * size)
    return out + protocol.encode_frame(Reply.OK, payload[::-1])


class Model:
    """The bridge's rules: (reply datagram, frame run or None) per request datagram."""

    def __init__(self) -> None:
        self.session: int | None = None
        self.last = 0
        self.stored = (udp.Status.OK, b"")

    def __call__(self, dgram: bytes) -> tuple[bytes, bytes | None]:
        head = udp.Header(0, 0, 0)        # the ids a reply to a datagram shorter than a header
        ok = len(dgram) >= udp.HEADER_BYTES + protocol.FRAME_OVERHEAD
        if len(dgram) >= udp.HEADER_BYTES:
            try:
                head, body = udp.Header.decode(dgram)
            except udp.UdpProtocolError:
                ok = False
                _magic, ver, flags, sess, seq = (dgram[:2], dgram[2], dgram[3],
                                                int.from_bytes(dgram[4:8], "little"),
                                                int.from_bytes(dgram[8:12], "little"))
                head = udp.Header(flags, sess, seq, ver)
        if ok:
            n = int.from_bytes(body[3:5], "little")
            ok = (head.version == udp.UDP_VERSION and head.flags == 0
                  and body[:2] == protocol.SYNC and n <= protocol.MAX_PAYLOAD
                  and len(body) == n + protocol.FRAME_OVERHEAD)

        def reply(status: int, data: bytes = b"") -> bytes:
            return udp.Header(status, head.session, head.seq).encode() + data
        if not ok:
            return reply(udp.Status.BAD_DATAGRAM), None
        same = self.session == head.session
        if same and head.seq == self.last:
            status, data = self.stored
            return reply(udp.Status.REPLAY if status == udp.Status.OK else status, data), None
        if (same and head.seq == (self.last + 1) & 0xFFFFFFFF) or (not same and head.seq == 0):
            self.session, self.last = head.session, head.seq
            data = device_reply(body)
            self.stored = ((udp.Status.OK, data) if len(data) <= udp.MAX_REPLY_BYTES
                           else (udp.Status.TOO_LONG, b""))
            return reply(*self.stored), body
        return reply(udp.Status.STALE), None


def conversation(rng: random.Random, n: int) -> list[bytes]:
    """`n` request datagrams: mostly a session's next seq, with repeats, stale seqs,
    another session's, a new session, and malformed ones."""
    out, session, seq = [], rng.getrandbits(32) | 1, 0
    frame = lambda: protocol.encode_frame(  # noqa: E731
        Op.ECHO, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
    last = udp.Header(0, session, 0).encode() + frame()
    out.append(last)
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            seq += 1
            last = udp.Header(0, session, seq).encode() + frame()
            out.append(last)
        elif r < 0.6:
            out.append(last)                                       # resent
        elif r < 0.7:
            stale = (seq + rng.choice([-2, -1, 2, 5])) & 0xFFFFFFFF   # wraps below 0
            out.append(udp.Header(0, session, stale).encode() + frame())
        elif r < 0.75:
            out.append(udp.Header(0, session ^ 0x100, 3).encode() + frame())
        elif r < 0.8:
            session, seq = rng.getrandbits(32) | 1, 0              # a new session
            last = udp.Header(0, session, 0).encode() + frame()
            out.append(last)
        else:
            good = bytearray(udp.Header(0, session, seq + 1).encode() + frame())
            kind = rng.randrange(6)
            if kind == 0:
                good[0] ^= 1                                       # magic
            elif kind == 1:
                good[3] = 1                                        # flags
            elif kind == 2:
                good = good[:-1]                                   # truncated frame
            elif kind == 3:
                good += protocol.encode_frame(Op.STATUS)           # two frames
            elif kind == 4:
                good = good[:rng.randrange(1, udp.HEADER_BYTES + 6)]
            else:
                good[udp.HEADER_BYTES] = 0                         # no sync
            out.append(bytes(good))
    return out


def _run(seed: int, idle: float, stall: float, n: int = 30) -> None:
    rng = random.Random(seed)
    dut = UdpBridge(LOCAL)
    requests = conversation(rng, n)
    model = Model()
    expected = [model(d) for d in requests]
    ran: list[bytes] = []
    replies: list[bytes] = []

    async def device(ctx) -> None:  # type: ignore[no-untyped-def]
        """Takes request bytes (random backpressure); answers each whole frame."""
        buf = bytearray()
        out = bytearray()
        while True:
            take = rng.random() >= stall
            ctx.set(dut.dev_rx.ready, int(take) if not out else 0)
            ctx.set(dut.dev_tx.valid, int(bool(out)))
            if out:
                ctx.set(dut.dev_tx.payload, out[0])
            _, _, valid, byte, tx_ready = await ctx.tick().sample(
                dut.dev_rx.valid, dut.dev_rx.payload, dut.dev_tx.ready)
            if out and tx_ready:
                out.pop(0)
            if valid and take and not out:
                buf.append(byte)
                if len(buf) >= 5 and len(buf) == int.from_bytes(buf[3:5], "little") + 7:
                    ran.append(bytes(buf))
                    out = bytearray(device_reply(bytes(buf)))
                    buf.clear()

    async def host(ctx) -> None:  # type: ignore[no-untyped-def]
        for dgram in requests:
            for k, byte in enumerate(dgram):
                while rng.random() < idle:
                    ctx.set(dut.udp_rx.valid, 0)
                    await ctx.tick()
                ctx.set(dut.udp_rx.valid, 1)
                ctx.set(dut.udp_rx.payload, {"data": byte, "last": int(k == len(dgram) - 1),
                                             "error": 0, "ip": IP, "port": PORT,
                                             "length": len(dgram)})
                await ctx.tick().until(dut.udp_rx.ready)
            ctx.set(dut.udp_rx.valid, 0)
            got = bytearray()
            while True:                                  # its reply, with backpressure
                ready = rng.random() >= stall
                ctx.set(dut.udp_tx.ready, int(ready))
                _, _, valid, beat, port, busy_rx = await ctx.tick().sample(
                    dut.udp_tx.valid, dut.udp_tx.payload, dut.dst_port, dut.udp_rx.ready)
                assert not busy_rx or not valid
                if valid and ready:
                    assert (beat.ip, beat.port, port) == (IP, PORT, PORT)
                    got.append(beat.data)
                    if beat.last:
                        assert beat.length == len(got)
                        break
            ctx.set(dut.udp_tx.ready, 0)
            replies.append(bytes(got))
            assert ctx.get(dut.dst_port) == LOCAL

    simulate(dut, [host], 20 * sum(len(d) + 200 for d in requests), processes=[device])
    assert len(replies) == len(requests), f"{len(replies)} of {len(requests)} replies"
    for k, (got, (want, _)) in enumerate(zip(replies, expected, strict=True)):
        assert got == want, f"datagram {k}: {requests[k][:16].hex()} -> {got[:16].hex()}, " \
                            f"expected {want[:16].hex()}"
    assert ran == [frame for _, frame in expected if frame is not None]
    statuses = {udp.Header.decode(r)[0].flags for r in replies}
    assert {udp.Status.OK, udp.Status.REPLAY, udp.Status.STALE,
            udp.Status.BAD_DATAGRAM} <= statuses


@pytest.mark.parametrize(("seed", "idle", "stall"), [(1, 0.0, 0.0), (2, 0.4, 0.0),
                                                      (3, 0.0, 0.5), (4, 0.3, 0.3)])
def test_bridge_against_model(seed: int, idle: float, stall: float) -> None:
    _run(seed, idle, stall)


def test_too_long_reply_and_error_flag() -> None:
    """A reply past the stored reply's size: TOO_LONG (and again when resent); a datagram
    LiteEth flags as errored: BAD_DATAGRAM."""
    model = Model()
    big = protocol.encode_frame(Op.ECHO, bytes([254, 250]))   # 2 DATA frames of 750 bytes
    d = udp.Header(0, 5, 0).encode() + big
    assert model(d)[0][3] == udp.Status.TOO_LONG and model(d)[0][3] == udp.Status.TOO_LONG
    dut = UdpBridge(LOCAL)
    replies: list[bytes] = []

    async def device(ctx) -> None:  # type: ignore[no-untyped-def]
        buf, out = bytearray(), bytearray()
        while True:
            ctx.set(dut.dev_rx.ready, int(not out))
            ctx.set(dut.dev_tx.valid, int(bool(out)))
            if out:
                ctx.set(dut.dev_tx.payload, out[0])
            _, _, valid, byte = await ctx.tick().sample(dut.dev_rx.valid, dut.dev_rx.payload)
            if out:
                out.pop(0)
            elif valid:
                buf.append(byte)
                if len(buf) >= 5 and len(buf) == int.from_bytes(buf[3:5], "little") + 7:
                    out, buf = bytearray(device_reply(bytes(buf))), bytearray()

    async def host(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.udp_tx.ready, 1)
        for dgram, error in ((d, 0), (d, 0), (udp.Header(0, 5, 1).encode() + big, 1)):
            for k, byte in enumerate(dgram):
                ctx.set(dut.udp_rx.valid, 1)
                last = k == len(dgram) - 1
                ctx.set(dut.udp_rx.payload, {"data": byte, "last": int(last),
                                             "error": error * int(last), "ip": IP,
                                             "port": PORT, "length": len(dgram)})
                await ctx.tick().until(dut.udp_rx.ready)
            ctx.set(dut.udp_rx.valid, 0)
            got = bytearray()
            while True:
                _, _, valid, beat = await ctx.tick().sample(dut.udp_tx.valid, dut.udp_tx.payload)
                if valid:
                    got.append(beat.data)
                    if beat.last:
                        break
            replies.append(bytes(got))

    simulate(dut, [host], 20000, processes=[device])
    assert [udp.Header.decode(r) for r in replies] == [
        (udp.Header(udp.Status.TOO_LONG, 5, 0), b""), (udp.Header(udp.Status.TOO_LONG, 5, 0), b""),
        (udp.Header(udp.Status.BAD_DATAGRAM, 5, 1), b"")]
