"""hw/spec/protocol.py: CRC vectors, frame round trips, resync after garbage, truncation."""

from __future__ import annotations

import random
import struct

import pytest

from hw.spec.dram import CSR_MAPS, DramPhy
from hw.spec.engine import LAYER_FIELDS
from hw.spec.protocol import (
    CSR_LEVELED_WORD,
    CSR_READ_FORMAT,
    CSR_VALUE_FORMAT,
    CSR_WINDOW_WORDS,
    CSR_WRITE_FORMAT,
    LAYER_FORMAT,
    LAYER_SPANS,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SYNC,
    TIMEOUT_BYTE_TIMES,
    DramFlag,
    EngineFlag,
    Err,
    Feature,
    Frame,
    FrameDecoder,
    Identity,
    Op,
    ProgramFlag,
    ProtocolError,
    Reply,
    Status,
    crc16,
    crc16_update,
    default_timeout_cycles,
    encode_frame,
    encode_layer,
    record_mask,
)


def test_crc_known_vectors():
    assert crc16(b"123456789") == 0x29B1            # CRC-16/CCITT-FALSE check value
    assert crc16(b"") == 0xFFFF
    assert crc16(b"A") == 0xB915
    assert crc16(bytes(256 * [0])) != crc16(bytes(255 * [0]))
    rng = random.Random(5)
    for n in (1, 2, 200, 1031):
        data = bytes(rng.randrange(256) for _ in range(n))
        init = rng.randrange(1 << 16)
        crc = init
        for b in data:
            crc = crc16_update(crc, b)
        assert crc == crc16(data, init), (n, init)


def test_codes_are_distinct_bytes():
    codes = [int(c) for c in (*Op, *Reply)]
    assert len(set(codes)) == len(codes) and all(0 <= c <= 0xFF for c in codes)
    assert len({int(e) for e in Err}) == len(Err) and Err.NONE == 0


def test_encode_layout():
    f = encode_frame(Op.ECHO, b"\x01\x02\x03")
    assert f[:2] == SYNC and f[2] == Op.ECHO and f[3:5] == b"\x03\x00"
    assert f[5:8] == b"\x01\x02\x03"
    assert struct.unpack("<H", f[8:])[0] == crc16(f[2:8])
    assert len(encode_frame(Op.STATUS)) == 7


@pytest.mark.parametrize("n", [0, 1, 2, 255, 256, MAX_PAYLOAD])
def test_round_trip(n):
    payload = bytes(random.Random(n).randrange(256) for _ in range(n))
    dec = FrameDecoder()
    assert dec.feed(encode_frame(0x42, payload)) == [Frame(0x42, payload)]
    assert dec.pending == 0 and dec.errors == 0


def test_byte_by_byte_and_many_frames():
    frames = [Frame(op, bytes([op] * op)) for op in (1, 2, 3, 0x80, 0xA5, 0x5A)]
    wire = b"".join(f.encode() for f in frames)
    dec = FrameDecoder()
    got = []
    for b in wire:
        got += dec.feed(bytes([b]))
    assert got == frames


def test_encode_rejects_bad_input():
    with pytest.raises(ProtocolError, match="MAX_PAYLOAD"):
        encode_frame(Op.ECHO, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ProtocolError, match="opcode"):
        encode_frame(0x100)


def test_resync_after_garbage():
    good = encode_frame(Op.IDENTIFY)
    # garbage with a false sync and a false header claiming 3 payload bytes
    garbage = bytes([0x00, 0xA5, 0x13, 0xA5, 0xA5, 0x5A, 0x07, 0x03, 0x00])
    dec = FrameDecoder()
    assert dec.feed(garbage) == [] and dec.pending > 0       # could still be a frame
    assert dec.feed(good) == [Frame(Op.IDENTIFY)]            # its CRC fails: rescan
    assert dec.errors == 1 and dec.pending == 0
    dec2 = FrameDecoder()
    assert dec2.feed(b"\xff\x00\x12" + good + b"\x5a\x5a" + good) == [Frame(Op.IDENTIFY)] * 2
    assert dec2.skipped == 5


def test_bad_crc_is_dropped_and_next_frame_found():
    a = bytearray(encode_frame(Op.ECHO, b"hello"))
    a[6] ^= 0x10
    b = encode_frame(Op.STATUS)
    dec = FrameDecoder()
    assert dec.feed(bytes(a) + b) == [Frame(Op.STATUS)]
    assert dec.errors == 1 and "bad CRC" in dec.last_error


def test_frame_hidden_after_false_header_with_bad_crc():
    """A false header whose 'frame' covers a real one: the real one is still found."""
    good = encode_frame(Op.STATUS)
    false = SYNC + bytes([0x01, 0x02, 0x00])   # claims 2 payload bytes, then a CRC
    dec = FrameDecoder()
    assert dec.feed(false + good) == [Frame(Op.STATUS)]
    assert dec.errors == 1


def test_length_too_long_dropped():
    bad = SYNC + bytes([0x03]) + struct.pack("<H", MAX_PAYLOAD + 1)
    dec = FrameDecoder()
    assert dec.feed(bad + encode_frame(Op.ECHO, b"x")) == [Frame(Op.ECHO, b"x")]
    assert dec.errors == 1 and "max payload" in dec.last_error


def test_truncated_frame_stays_pending():
    f = encode_frame(Op.ECHO, b"abcdef")
    dec = FrameDecoder()
    assert dec.feed(f[:-1]) == [] and dec.pending == len(f) - 1
    assert dec.feed(f[-1:]) == [Frame(Op.ECHO, b"abcdef")]
    dec.feed(f[:4])
    dec.reset()
    assert dec.pending == 0 and dec.feed(f) == [Frame(Op.ECHO, b"abcdef")]


def test_random_corruption_never_yields_a_wrong_frame():
    rng = random.Random(7)
    frames = [Frame(rng.choice(list(Op)), bytes(rng.randrange(256) for _ in range(
        rng.randrange(40)))) for _ in range(300)]
    wire = bytearray()
    for f in frames:
        e = bytearray(f.encode())
        if rng.random() < 0.3:
            e[rng.randrange(len(e))] ^= 1 << rng.randrange(8)
        wire += e
    dec = FrameDecoder()
    got = []
    pos = 0
    while pos < len(wire):
        n = rng.randrange(1, 30)
        got += dec.feed(bytes(wire[pos:pos + n]))
        pos += n
    assert set(got) <= set(frames)               # nothing invented
    assert len(got) >= 150                        # most uncorrupted frames survive


def test_board_timeout_is_in_byte_times():
    assert default_timeout_cycles(8) == TIMEOUT_BYTE_TIMES * 80
    assert default_timeout_cycles(16) == 2 * default_timeout_cycles(8)


def test_identity_and_status_payloads():
    ident = Identity(0xDEADBEEF, 1, 2, MAX_PAYLOAD, Feature(0), 8, 8)
    assert Identity.decode(ident.encode()) == ident and ident.ethernet is None
    with pytest.raises(ProtocolError, match="IDENTIFY"):
        Identity.decode(b"\x00")
    # Ethernet: the IPv4 address (network order) and the UDP port, then the DRAM layout
    eth = Identity(0xDEADBEEF, PROTOCOL_VERSION, 4, MAX_PAYLOAD,
                   Feature.MEMORY | Feature.DRAM | Feature.ETHERNET, 8, 8, 0xC0A80132, 7777,
                   DramPhy.A7DDRPHY)
    raw = eth.encode()
    assert raw[-7:] == bytes([192, 168, 1, 50]) + struct.pack("<HB", 7777, DramPhy.A7DDRPHY)
    assert Identity.decode(raw) == eth and eth.ethernet == "192.168.1.50:7777"
    assert Identity.version_of(raw) == PROTOCOL_VERSION and Identity.version_of(raw[:4]) is None
    for cut in (1, 2, 6):                        # a truncated reply is refused
        with pytest.raises(ProtocolError, match=f"has {len(raw) - cut} bytes, expected 18"):
            Identity.decode(raw[:-cut])
    with pytest.raises(ProtocolError, match="without the ETHERNET feature"):
        Identity.decode(Identity(1, PROTOCOL_VERSION, 4, MAX_PAYLOAD, Feature.MEMORY, 8, 8,
                                 0x0A000001, 0).encode())
    with pytest.raises(ProtocolError, match="DRAM CSR layout without the DRAM feature"):
        Identity.decode(Identity(1, PROTOCOL_VERSION, 4, MAX_PAYLOAD, Feature.MEMORY, 8, 8,
                                 dram_phy=DramPhy.SIM_SDR).encode())
    st = Status.decode(struct.pack("<IHHBBIBBHIB", 123456, 7, 2, Err.BAD_CRC, 6, 99, 2,
                                   Err.NONE, 254, 56_000_000, 1))
    assert st == Status(123456, 7, 2, 1, EngineFlag.DONE | EngineFlag.LOADED, 99,
                        ProgramFlag.DONE, 0, 254, 56_000_000, DramFlag.INIT_DONE)
    assert Status.decode(st.encode()) == st
    with pytest.raises(ProtocolError, match="STATUS reply has 22 bytes, expected 23"):
        Status.decode(struct.pack("<IHHBBIBBHI", 1, 2, 3, 0, 0, 0, 0, 0, 0, 0))   # version 3
    with pytest.raises(ProtocolError, match="STATUS reply has 14 bytes, expected 23"):
        Status.decode(struct.pack("<IHHBBI", 123456, 7, 2, Err.BAD_CRC, 6, 99))   # version 1
    with pytest.raises(ProtocolError, match="STATUS"):
        Status.decode(b"")


def test_csr_request_formats():
    """CSR_READ / CSR_WRITE: word addresses in a window that holds every LiteDRAM core's
    CSRs (tests/test_dram.py checks the cores) and the device's own leveled word."""
    assert struct.calcsize(CSR_READ_FORMAT) == 4 and struct.calcsize(CSR_WRITE_FORMAT) == 8
    assert struct.calcsize(CSR_VALUE_FORMAT) == 4
    assert CSR_LEVELED_WORD == CSR_WINDOW_WORDS - 1
    assert {Op.CSR_READ, Op.CSR_WRITE} <= set(Op) and len({int(o) for o in Op}) == len(Op)
    assert DramFlag.LEVELED not in DramFlag.INIT_DONE | DramFlag.INIT_ERROR | DramFlag.UNLEVELED
    for cmap in CSR_MAPS.values():
        regs = [cmap.phase_reg(p, r) + k for p in range(cmap.phases)
                for r, n in (("command", 1), ("command_issue", 1), ("address", 1),
                             ("baddress", 1), ("wrdata", cmap.data_words),
                             ("rddata", cmap.data_words)) for k in range(n)]
        assert len(set(regs)) == len(regs) and cmap.control not in regs
        assert max(regs) < CSR_LEVELED_WORD, cmap.phy
        assert sum(cmap.lane_mask(lane) for lane in range(cmap.lanes)) == (
            1 << cmap.dfi_databits) - 1


def test_layer_spans_locate_every_register():
    names = [name for name, _ in LAYER_FIELDS]
    assert list(LAYER_SPANS) == names
    assert sum(size for _, size in LAYER_SPANS.values()) == struct.calcsize(LAYER_FORMAT)
    for n, name in enumerate(names):
        payload = encode_layer(**{other: 0 for other in names} | {name: n + 1})
        off, size = LAYER_SPANS[name]
        assert int.from_bytes(payload[off:off + size], "little") == n + 1, name
        assert payload[:off] + payload[off + size:] == bytes(len(payload) - size), name


def test_record_mask():
    """MEM_MASK's reference: a bit per record, LSB first, set when the int16 key is above
    the threshold (not at it); the last byte's spare bits 0."""
    keys = [-32768, -1, 0, 1, 2, 32767, 1, 1, 0]
    data = b"".join(b"\xee" + k.to_bytes(2, "little", signed=True) for k in keys)
    assert record_mask(data, 3, 1, 0) == bytes([0b11111000, 0b0])
    assert record_mask(data, 3, 1, -32768) == bytes([0b11111110, 0b1])
    assert record_mask(data, 3, 1, 32767) == bytes(2)
