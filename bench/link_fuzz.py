"""Link fuzz: malformed frames through the RTL receiver and command decoder of the
Verilator-built device (`sw.runtime.link.SimLink`), counting hangs, wrong replies and
silent wrong results; afterwards the device must still answer IDENTIFY and compute a
layer bit-exactly.

    python bench/link_fuzz.py [--frames 10000] [--seed 1]

Each fuzz frame is one cell: the frame, for the kinds that can leave the receiver inside
a frame `MAX_PAYLOAD + 8` zero bytes (they complete any frame a corrupted length opened;
zeros between frames are skipped), then a marker ECHO whose reply closes the cell. Kinds:

- exact replies expected: `valid` (ECHO, IDENTIFY, STATUS), `wrong_crc` (BAD_CRC),
  `oversize` (a length over MAX_PAYLOAD: LENGTH_TOO_LONG), `wrong_length` (IDENTIFY,
  STATUS or LAYER_CONFIG with a payload of the wrong size: BAD_LENGTH), `unknown_op`
  (UNKNOWN_OPCODE), `idle_engine` (LOAD_PARAMS / RUN without an armed pass: NOT_ARMED;
  LAYER_CONFIG outside the limits: BAD_LAYER), `truncated` (a frame cut short, then
  silence: TIMEOUT);
- any ERROR allowed, an OK only where a correct receiver would have found a valid frame
  in the bytes (`hw.spec.protocol.FrameDecoder` on the cell): `bitflip` (1-3 flipped
  bits), `garbage` (random bytes, some with a sync pattern), `cut_then_zeros` (a frame
  cut short and completed by the zeros).

Counts: `hang` (the marker's reply did not come within the time limit), `wrong` (a cell's
replies differ from what is allowed), `silent` (an OK reply with a payload the request
did not ask for: a silent wrong result; also counted in `wrong`).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from hw.spec.config import DEFAULT, HwConfig  # noqa: E402
from hw.spec.protocol import (  # noqa: E402
    LAYER_FORMAT,
    MAX_PAYLOAD,
    STATUS_FORMAT,
    SYNC,
    Err,
    Frame,
    FrameDecoder,
    Op,
    Reply,
    encode_frame,
)
from sw.runtime.device import Device  # noqa: E402
from sw.runtime.link import Link, SimLink  # noqa: E402

KINDS = ("valid", "wrong_crc", "oversize", "wrong_length", "unknown_op", "idle_engine",
         "truncated", "bitflip", "garbage", "cut_then_zeros")
#: Kinds whose replies are known exactly.
EXACT = KINDS[:7]
PAD = bytes(MAX_PAYLOAD + 8)
#: Bytes written to the device before its replies are read (cells are batched).
BATCH_BYTES = 16_384
STATUS_LEN = struct.calcsize(STATUS_FORMAT)
LAYER_LEN = struct.calcsize(LAYER_FORMAT)

#: A reply the model allows: (reply code, exact payload) or (reply code, payload length).
Want = tuple[int, bytes | int]


@dataclass
class Cell:
    kind: str
    wire: bytes
    want: list[Want] | None      # exact replies; None: any ERROR, OKs from `allowed`
    allowed: set[Want] = field(default_factory=set)
    silence: bool = False        # wait for the device's frame timeout after `wire`


@dataclass
class Counts:
    frames: int = 0
    hang: int = 0
    wrong: int = 0
    silent: int = 0
    kinds: Counter = field(default_factory=Counter)
    replies: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def bad(self, what: str, cell: Cell, got: list[Frame]) -> None:
        if len(self.examples) < 5:
            self.examples.append(f"{what}: {cell.kind} {cell.wire[:24].hex()} -> "
                                 f"{[(hex(f.opcode), f.payload[:8].hex()) for f in got]}")


def error(code: Err, op: int) -> Want:
    return (Reply.ERROR, bytes([code, op]))


def model_reply(frame: Frame, ident: bytes) -> Want:
    """What a correct device with an idle engine answers to a valid frame."""
    op, n = frame.opcode, len(frame.payload)
    if op == Op.IDENTIFY:
        return (Reply.OK, ident) if n == 0 else error(Err.BAD_LENGTH, op)
    if op == Op.STATUS:
        return (Reply.OK, STATUS_LEN) if n == 0 else error(Err.BAD_LENGTH, op)
    if op == Op.ECHO:
        return (Reply.OK, frame.payload)
    if op == Op.LAYER_CONFIG:
        return error(Err.BAD_LENGTH, op) if n != LAYER_LEN else (Reply.OK, 0)
    if op in (Op.LOAD_PARAMS, Op.RUN):
        return error(Err.NOT_ARMED, op)
    return error(Err.UNKNOWN_OPCODE, op)


def make_cell(rng: random.Random, kind: str, ident: bytes) -> Cell:
    payload = rng.randbytes(rng.randrange(0, 48))
    if kind == "valid":
        op = rng.choice([Op.ECHO, Op.ECHO, Op.IDENTIFY, Op.STATUS])
        p = payload if op == Op.ECHO else b""
        return Cell(kind, encode_frame(op, p), [model_reply(Frame(op, p), ident)])
    if kind == "wrong_crc":
        op = rng.choice(list(Op))
        wire = bytearray(encode_frame(op, payload))
        wire[-rng.randrange(1, 3)] ^= 1 << rng.randrange(8)
        return Cell(kind, bytes(wire), [error(Err.BAD_CRC, op)])
    if kind == "oversize":
        op = rng.randrange(256)
        n = rng.randrange(MAX_PAYLOAD + 1, 1 << 16)
        wire = SYNC + struct.pack("<BH", op, n) + bytes(rng.randrange(0, 16))
        return Cell(kind, wire, [error(Err.LENGTH_TOO_LONG, op)])
    if kind == "wrong_length":
        op = rng.choice([Op.IDENTIFY, Op.STATUS, Op.LAYER_CONFIG])
        p = payload or b"\x00"
        if op == Op.LAYER_CONFIG and len(p) == LAYER_LEN:
            p += b"\x00"
        return Cell(kind, encode_frame(op, p), [error(Err.BAD_LENGTH, op)])
    if kind == "unknown_op":
        op = rng.choice([x for x in range(256) if x not in set(Op)])
        return Cell(kind, encode_frame(op, payload), [error(Err.UNKNOWN_OPCODE, op)])
    if kind == "idle_engine":
        op = rng.choice([Op.LOAD_PARAMS, Op.RUN, Op.LAYER_CONFIG])
        if op == Op.LAYER_CONFIG:    # width 0: outside the engine's limits, nothing armed
            fields = [0, *(rng.randrange(1, 8) for _ in range(3)), 0, 0, 0, 0]
            return Cell(kind, encode_frame(op, struct.pack(LAYER_FORMAT, *fields)),
                        [error(Err.BAD_LAYER, op)])
        return Cell(kind, encode_frame(op, payload or b"\x01"), [error(Err.NOT_ARMED, op)])
    if kind == "truncated":
        op = rng.choice([Op.ECHO, Op.STATUS, Op.LAYER_CONFIG, Op.IDENTIFY])
        wire = encode_frame(op, payload)
        return Cell(kind, wire[:rng.randrange(3, len(wire))], [error(Err.TIMEOUT, op)],
                    silence=True)
    if kind == "bitflip":
        op = rng.choice(list(Op))
        wire = bytearray(encode_frame(op, payload))
        for _ in range(rng.randrange(1, 4)):
            wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
    elif kind == "garbage":
        wire = bytearray(rng.randbytes(rng.randrange(1, 64)))
        if rng.random() < 0.5:
            at = rng.randrange(len(wire))
            wire[at:at] = SYNC
    elif kind == "cut_then_zeros":
        wire = bytearray(encode_frame(rng.choice(list(Op)), payload))
        wire = wire[:rng.randrange(1, len(wire))]
    else:
        raise ValueError(kind)
    found = FrameDecoder().feed(bytes(wire) + PAD)
    return Cell(kind, bytes(wire), None, {model_reply(f, ident) for f in found})


def _matches(f: Frame, want: Want) -> bool:
    code, p = want
    return f.opcode == code and (f.payload == p if isinstance(p, bytes) else
                                 p == 0 or len(f.payload) == p)


def check(cell: Cell, got: list[Frame], counts: Counts) -> None:
    for f in got:
        name = (Err(f.payload[0]).name if f.opcode == Reply.ERROR and len(f.payload) == 2
                and f.payload[0] in set(Err) else hex(f.opcode))
        counts.replies[name if f.opcode == Reply.ERROR else "OK" if f.opcode == Reply.OK
                       else name] += 1
    oks = [f for f in got if f.opcode != Reply.ERROR]
    if cell.want is not None:
        ok = len(got) == len(cell.want) and all(map(_matches, got, cell.want))
        silent = any(not any(_matches(f, w) for w in cell.want) for f in oks)
    else:
        bad_errors = [f for f in got if f.opcode == Reply.ERROR and
                      (len(f.payload) != 2 or f.payload[0] not in set(Err))]
        silent = any(not any(_matches(f, w) for w in cell.allowed) for f in oks)
        ok = not bad_errors and not silent
    if not ok:
        counts.wrong += 1
        counts.bad("wrong", cell, got)
    if silent:
        counts.silent += 1


def _marker(i: int) -> tuple[bytes, bytes]:
    payload = b"\xc3FZ" + struct.pack("<I", i)
    return encode_frame(Op.ECHO, payload), payload


def _collect(link: Link, dec: FrameDecoder, markers: list[bytes], seconds: float,
             ) -> tuple[list[list[Frame]], bool]:
    """Replies split at each marker's echo; False when a marker did not come in time."""
    cells: list[list[Frame]] = [[] for _ in markers]
    k = 0
    deadline = time.monotonic() + seconds
    while k < len(markers):
        left = deadline - time.monotonic()
        if left <= 0:
            return cells, False
        for f in dec.feed(link.read(min(left, 0.5))):
            if k < len(markers) and f.opcode == Reply.OK and f.payload == markers[k]:
                k += 1
            elif k < len(markers):
                cells[k].append(f)
    return cells, True


def _recover(link: Link, ident: bytes, counts: Counts) -> None:
    """After a hang: zeros and IDENTIFY until the device answers (or give up)."""
    for _ in range(5):
        link.write(PAD + encode_frame(Op.IDENTIFY))
        dec, end = FrameDecoder(), time.monotonic() + 5
        while time.monotonic() < end:
            if any(f.payload == ident for f in dec.feed(link.read(0.5))):
                return
    raise RuntimeError(f"the device stopped answering after {counts.frames} fuzz frames")


def fuzz(link: Link, frames: int, seed: int, timeout: float = 10.0) -> Counts:
    """`frames` fuzz cells through `link`, in batches; the counts."""
    rng = random.Random(seed)
    ident = Device(link, timeout=5.0).request(Op.IDENTIFY)
    counts = Counts()
    pending: list[Cell] = []

    def send(cells: list[Cell]) -> tuple[list[list[Frame]], bool]:
        wire, marks = bytearray(), []
        for c in cells:
            frame, payload = _marker(counts.frames + len(marks))
            wire += c.wire + (b"" if c.want is not None else PAD) + frame
            marks.append(payload)
        link.write(bytes(wire))
        return _collect(link, FrameDecoder(), marks, timeout)

    def send_then_wait(cell: Cell) -> tuple[list[list[Frame]], bool]:
        """A truncated frame, silence until the device's frame timeout answers, a marker."""
        link.write(cell.wire)
        dec, tail = FrameDecoder(), []
        end = time.monotonic() + timeout
        while not tail and time.monotonic() < end:
            tail += dec.feed(link.read(0.5))
        frame, payload = _marker(counts.frames)
        link.write(frame)
        got, arrived = _collect(link, dec, [payload], timeout)
        return [tail + got[0]], arrived

    def flush(cells: list[Cell]) -> None:
        if not cells:
            return
        got, arrived = send_then_wait(cells[0]) if cells[0].silence else send(cells)
        for c, replies in zip(cells, got, strict=True):
            counts.kinds[c.kind] += 1
            counts.frames += 1
            check(c, replies, counts)
        if not arrived:
            counts.hang += 1
            _recover(link, ident, counts)

    size = 0
    for _ in range(frames):
        cell = make_cell(rng, rng.choice(KINDS), ident)
        if cell.silence:
            flush(pending)
            pending, size = [], 0
            flush([cell])
            continue
        pending.append(cell)
        size += len(cell.wire) + len(PAD)
        if size >= BATCH_BYTES:
            flush(pending)
            pending, size = [], 0
    flush(pending)
    return counts


def layer_after(link: Link, cfg: HwConfig, seed: int) -> bool:
    """IDENTIFY and one engine pass, bit-exact against tests/reference.py's ref_engine."""
    from tests.reference import ref_engine

    dev = Device(link, timeout=10.0)
    dev.identify(expect=cfg)
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (6, 7, 10)).astype(np.int8)
    w = rng.integers(-127, 128, (12, 3, 3, 10)).astype(np.int8)
    b = rng.integers(-3000, 3000, 12).astype(np.int32)
    sh = rng.integers(4, 10, 12)
    y, _ = dev.run_group(x, w, b, sh, leaky=True, head=False, pool=0, cfg=cfg)
    want = ref_engine(x, w, b, sh, leaky=True, head=False, pool=0, cfg=cfg)
    return y.shape == want.shape and bool(np.array_equal(y.astype(np.int64), want))


def main(argv: list[str] | None = None) -> int:
    from bench.golden_frame import machine

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print(f"machine: {machine()}")
    t0 = time.monotonic()
    with SimLink(DEFAULT) as link:
        t_start = time.monotonic()
        counts = fuzz(link, args.frames, args.seed)
        t_fuzz = time.monotonic() - t_start
        exact = layer_after(link, DEFAULT, args.seed)
        status = Device(link).status()
    print(f"{counts.frames} fuzz frames (seed {args.seed}) in {t_fuzz:.1f} s "
          f"({time.monotonic() - t0:.1f} s with the simulator's start and the layer check)")
    print("kinds: " + ", ".join(f"{k} {counts.kinds[k]}" for k in KINDS))
    print("replies: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.replies.items())))
    print(f"hangs {counts.hang}, wrong replies {counts.wrong}, silent wrong results "
          f"{counts.silent}")
    print(f"afterwards: IDENTIFY answered, layer bit-exact: {exact}; device STATUS: "
          f"{status.frames_ok} good / {status.frames_bad} bad frames (16-bit counters), "
          f"simulated cycles {link.cycles}")
    for e in counts.examples:
        print("  " + e)
    return 0 if exact and not (counts.hang or counts.wrong or counts.silent) else 1


if __name__ == "__main__":
    raise SystemExit(main())
