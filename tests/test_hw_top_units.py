"""The device top's units (hw/top/): ValuePacker, BeatPacker, ReplySender, LayerConfigLoader, each
with random idle inputs and random output backpressure against a small reference; the
CommandDecoder per opcode in an environment model (frames, payload bytes, reply sender,
LAYER_CONFIG loader) against the replies and routes of docs/protocol.md."""

from __future__ import annotations

import random
import struct

import pytest

from hw.engine import layer_layout
from hw.link import ErrCode, OpCode, ReplyCode
from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.spec.engine import LAYER_FIELDS, layer_bits, out_value_bytes
from hw.top import BeatPacker, LayerConfigLoader, ReplySender, ReplySource, ValuePacker
from hw.top.command import REPLY_VALUE_BYTES, CommandDecoder
from tests.hwbench import beats, compare, fit, receive, send, simulate

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152, head_bits=12)


# -- ValuePacker ----------------------------------------------------------------------
@pytest.mark.parametrize(("head", "seed", "idle", "stall"), [
    (False, 1, 0.3, 0.3), (True, 2, 0.2, 0.5), (True, 3, 0.0, 0.0), (False, 4, 0.0, 0.0)])
def test_value_packer_matches_reference(head: bool, seed: int, idle: float,
                                        stall: float) -> None:
    dut = ValuePacker(CFG)
    rng = random.Random(seed)
    bits = CFG.head_bits if head else CFG.act_bits
    values = [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) for _ in range(60)]
    n = out_value_bytes(CFG, head)
    want = [b for v in values for b in (v & ((1 << bits) - 1)).to_bytes(n, "little")]
    got: list[int] = []
    times: list[int] = []

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.head, int(head))
        await send(dut.i, values, rng, idle)(ctx)

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall, times)],
             cycles=20 * len(want))
    compare(f"packer head={head}", want, got)
    if not idle and not stall:             # one byte per cycle
        assert times == list(range(times[0], times[0] + len(want)))


# -- BeatPacker -----------------------------------------------------------------------
@pytest.mark.parametrize(("n", "seed", "idle", "stall"), [
    (4, 1, 0.3, 0.3), (8, 2, 0.0, 0.0), (4, 3, 0.0, 0.6), (1, 4, 0.2, 0.2)])
def test_beat_packer_matches_reference(n: int, seed: int, idle: float, stall: float) -> None:
    """Bytes in, beats of n bytes out; a `clear` drops a partial beat (the bytes sent
    before it leave no trace)."""
    dut = BeatPacker(n)
    rng = random.Random(seed)
    junk = [rng.randrange(256) for _ in range(n - 1)]
    data = [rng.randrange(256) for _ in range(12 * n)]
    want = beats(bytes(data), n)
    got: list[int] = []
    times: list[int] = []

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        if n > 1:
            await send(dut.i, junk, rng, idle)(ctx)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await send(dut.i, data, rng, idle)(ctx)

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall, times)],
             cycles=40 * len(data) + 100)
    compare(f"beat packer n={n}", want, got)
    if not idle and not stall:             # a beat every n cycles
        assert times == list(range(times[0], times[0] + n * len(want), n))


# -- ReplySender ----------------------------------------------------------------------
def test_reply_sender_matches_reference() -> None:
    dut = ReplySender(REPLY_VALUE_BYTES)
    rng = random.Random(5)
    requests, hdrs, data, payload, fifo = [], [], [], [], []
    for _ in range(30):
        source = rng.choice(list(ReplySource))
        code = rng.choice(list(ReplyCode))
        if source == ReplySource.REGS:
            length = rng.randrange(REPLY_VALUE_BYTES + 1)
            value = rng.randrange(1 << (8 * REPLY_VALUE_BYTES))
            data += list(value.to_bytes(REPLY_VALUE_BYTES, "little")[:length])
        else:
            length = rng.randrange(20)
            value = 0
            stream = [rng.randrange(256) for _ in range(length)]
            (payload if source == ReplySource.PAYLOAD else fifo).extend(stream)
            data += stream
        requests.append({"code": code, "length": length, "source": source, "value": value})
        hdrs.append({"code": code.value, "length": length})
    got_hdrs: list[dict[str, int]] = []
    got_data: list[int] = []
    dones = [0]

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, done in ctx.tick().sample(dut.done):
            dones[0] += done

    simulate(dut, [send(dut.req, requests, rng, 0.3), send(dut.payload, payload, rng, 0.3),
                   send(dut.fifo, fifo, rng, 0.3),
                   receive(dut.hdr, len(hdrs), got_hdrs, rng, 0.3),
                   receive(dut.data, len(data), got_data, rng, 0.3)],
             cycles=10 * (len(data) + len(hdrs)) + 100, processes=[monitor])
    compare("reply headers", hdrs, got_hdrs)
    compare("reply bytes", data, got_data)
    assert dones[0] == len(requests)


# -- LayerConfigLoader ----------------------------------------------------------------
@pytest.mark.parametrize(("seed", "idle"), [(1, 0.0), (2, 0.4), (3, 0.7)])
def test_layer_config_loader_matches_reference(seed: int, idle: float) -> None:
    """Each field from its LAYER_SPANS bytes, cut to its width (values beyond the width
    too); `done` with `ok` = `shape_ok` 4 cycles after the last byte's, `start` only then."""
    dut = LayerConfigLoader(CFG)
    rng = random.Random(seed)
    layout = layer_layout(CFG)
    errors: list[str] = []
    events: list[tuple[int, int, int, int]] = []       # cycle, done, ok, start
    cycle = [0]

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for _ in range(8):
            regs = {name: rng.randrange(1 << (8 * struct.calcsize(fmt)))
                    for name, fmt in LAYER_FIELDS}
            shape_ok = rng.randrange(2)
            ctx.set(dut.shape_ok, shape_ok)
            ctx.set(dut.go, 1)
            await ctx.tick()
            ctx.set(dut.go, 0)
            del events[:]
            await send(dut.payload, protocol.encode_layer(**regs), rng, idle)(ctx)
            last = cycle[0]
            await ctx.tick().repeat(6)
            if events != [(last + 4, 1, shape_ok, shape_ok)]:
                errors.append(f"done/ok/start {events}, expected at {last + 4}")
            got = {name: ctx.get(dut.layer[name]) for name in layer_bits(CFG)}
            if got != fit(layout, regs):
                errors.append(f"layer {got}, expected {fit(layout, regs)}")

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, done, ok, start in ctx.tick().sample(dut.done, dut.ok, dut.start):
            cycle[0] += 1
            if done or start:
                events.append((cycle[0], done, ok, start))

    simulate(dut, [bench], cycles=2000, processes=[monitor])
    assert not errors, "\n".join(errors[:3])


# -- CommandDecoder -------------------------------------------------------------------
IDENT = bytes(range(1, 12))
LAYER_LEN = struct.calcsize(protocol.LAYER_FORMAT)
ROUTES = ("echo", "config", "params", "pixels")

#: (name, opcode, payload length, frame error, engine state, full FIFO during RUN,
#: LAYER_CONFIG judged legal) -> expected replies (code, length, source) and where the
#: payload goes.
CASES = [
    ("bad crc", OpCode.ECHO, 3, ErrCode.BAD_CRC, {}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("identify", OpCode.IDENTIFY, 0, ErrCode.NONE, {}, False, True,
     [(ReplyCode.OK, len(IDENT), ReplySource.REGS)], None),
    ("identify with payload", OpCode.IDENTIFY, 1, ErrCode.NONE, {}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("echo", OpCode.ECHO, 9, ErrCode.NONE, {}, False, True,
     [(ReplyCode.OK, 9, ReplySource.PAYLOAD)], "echo"),
    ("unknown", 0x33, 0, ErrCode.NONE, {}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("config", OpCode.LAYER_CONFIG, LAYER_LEN, ErrCode.NONE, {}, False, True,
     [(ReplyCode.OK, 0, ReplySource.REGS)], "config"),
    ("config refused", OpCode.LAYER_CONFIG, LAYER_LEN, ErrCode.NONE, {}, False, False,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], "config"),
    ("config busy", OpCode.LAYER_CONFIG, LAYER_LEN, ErrCode.NONE, {"busy": 1}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("params unarmed", OpCode.LOAD_PARAMS, 5, ErrCode.NONE, {}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("params", OpCode.LOAD_PARAMS, 7, ErrCode.NONE, {"busy": 1}, False, True,
     [(ReplyCode.OK, 0, ReplySource.REGS)], "params"),
    ("run unloaded", OpCode.RUN, 4, ErrCode.NONE, {"busy": 1}, False, True,
     [(ReplyCode.ERROR, 2, ReplySource.REGS)], None),
    ("run", OpCode.RUN, 12, ErrCode.NONE, {"busy": 1, "loaded": 1}, False, True,
     [(ReplyCode.OK, 100, ReplySource.FIFO)], "pixels"),
    ("run, full FIFO", OpCode.RUN, 12, ErrCode.NONE, {"busy": 1, "loaded": 1}, True, True,
     [(ReplyCode.DATA, protocol.MAX_PAYLOAD, ReplySource.FIFO),
      (ReplyCode.OK, 100, ReplySource.FIFO)], "pixels"),
    ("run, collect", OpCode.RUN, 0, ErrCode.NONE, {"loaded": 1}, False, True,
     [(ReplyCode.OK, 100, ReplySource.FIFO)], None),
]


def _decoder_case(dut: CommandDecoder, rng: random.Random, opcode: int, length: int,
                  error: ErrCode, state: dict[str, int], full: bool, legal: bool):  # type: ignore[no-untyped-def]
    """A testbench playing the decoder's environment for one frame; returns it and what it
    saw: replies (code, length, source, value), routed bytes per port, frame releases."""
    seen: dict[str, list] = {"replies": [], "release": [], **{r: [] for r in ROUTES}}
    payload = [rng.randrange(256) for _ in range(length)]

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.frame.payload, {"opcode": opcode, "length": length, "error": error})
        ctx.set(dut.frame.valid, 1)
        ctx.set(dut.engine_state, {"busy": 0, "done": 0, "loaded": 0, "param_err": 0,
                                   "cycles": 0} | state)
        ctx.set(dut.fifo_level, 100)
        pos, busy_for, loader, fill, echo, reading = 0, -1, -1, full, 0, False
        while not seen["release"]:
            ctx.set(dut.payload.valid, int(pos < length and rng.random() < 0.7))
            ctx.set(dut.payload.payload, payload[pos] if pos < length else 0)
            for r in ROUTES:           # the sender reads `echo` for a PAYLOAD reply only
                ctx.set(getattr(dut, r).ready, int(rng.random() < 0.7
                                                   and (r != "echo" or echo > 0)))
            ctx.set(dut.reply.ready, int(busy_for < 0))
            ctx.set(dut.reply_done, int(busy_for == 0))
            ctx.set(dut.config_done, int(loader == 0))
            ctx.set(dut.config_ok, int(loader == 0 and legal))
            if fill and pos > length // 2:
                ctx.set(dut.fifo_level, protocol.MAX_PAYLOAD)
            sampled = await ctx.tick().sample(
                dut.payload.valid, dut.payload.ready, dut.reply.valid, dut.reply.payload,
                dut.config_go, dut.frame.ready, dut.read_start,
                *[getattr(dut, r).valid for r in ROUTES], *[getattr(dut, r).ready for r in ROUTES])
            p_valid, p_ready, r_valid, req, go, release, _ = sampled[2:9]
            valids, readies = sampled[9:9 + len(ROUTES)], sampled[9 + len(ROUTES):]
            if p_valid and p_ready:
                for r, v, rdy in zip(ROUTES, valids, readies, strict=True):
                    if v and rdy:
                        seen[r].append(payload[pos])
                pos += 1
                echo -= valids[0] and readies[0]
            busy_for -= busy_for >= 0 and not echo
            if r_valid and busy_for < 0:
                seen["replies"].append((ReplyCode(req.code), req.length,
                                        ReplySource(req.source), int(req.value)))
                busy_for = rng.randrange(3)
                echo = req.length if req.source == ReplySource.PAYLOAD else 0
                if req.code == ReplyCode.DATA:
                    fill = False
                    ctx.set(dut.fifo_level, 100)
            # the loader model: done 3 cycles after it has all the payload
            reading = reading or bool(go)
            loader = 3 if reading and pos == length else loader - (loader >= 0)
            reading = reading and pos < length
            if release:
                seen["release"].append(1)
        ctx.set(dut.frame.valid, 0)
        await ctx.tick()

    return bench, seen, payload


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_command_decoder_replies_and_routes(case: tuple) -> None:  # type: ignore[type-arg]
    name, opcode, length, error, state, full, legal, replies, route = case
    dut = CommandDecoder(IDENT)
    bench, seen, payload = _decoder_case(dut, random.Random(len(name)), opcode, length,
                                         error, state, full, legal)
    simulate(dut, [bench], cycles=2000)
    assert [r[:3] for r in seen["replies"]] == replies, seen["replies"]
    for r in ROUTES:
        assert seen[r] == (payload if r == route else []), (r, seen[r])
    code, length_, _, value = seen["replies"][-1]
    if code == ReplyCode.ERROR:
        want_err = (error if error != ErrCode.NONE else
                    ErrCode.UNKNOWN_OPCODE if opcode == 0x33 else
                    ErrCode.BUSY if name == "config busy" else
                    ErrCode.BAD_LAYER if name == "config refused" else
                    ErrCode.NOT_ARMED if "un" in name else ErrCode.BAD_LENGTH)
        op = opcode if isinstance(opcode, int) else opcode.value
        assert value & 0xFFFF == want_err.value | op << 8, (hex(value), want_err)
    if name == "identify":
        assert value.to_bytes(REPLY_VALUE_BYTES, "little")[:length_] == IDENT


def test_command_decoder_status_counts_frames() -> None:
    """STATUS after a good and a bad frame: frames_ok 1 (not yet itself), frames_bad 1, the
    last error, and the engine state."""
    dut = CommandDecoder(IDENT)
    rng = random.Random(3)
    runs = [_decoder_case(dut, rng, OpCode.IDENTIFY, 0, ErrCode.NONE, {}, False, True),
            _decoder_case(dut, rng, OpCode.ECHO, 2, ErrCode.TIMEOUT, {}, False, True),
            _decoder_case(dut, rng, OpCode.STATUS, 0, ErrCode.NONE,
                          {"done": 1, "param_err": 1, "cycles": 1234}, False, True)]

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for run, _, _ in runs:
            await run(ctx)

    simulate(dut, [bench], cycles=500)
    _, length, _, value = runs[2][1]["replies"][0]
    status = protocol.Status.decode(value.to_bytes(REPLY_VALUE_BYTES, "little")[:length])
    assert (status.frames_ok, status.frames_bad, status.last_error) == (1, 1, ErrCode.TIMEOUT.value)
    assert (status.engine, status.engine_cycles) == (0x0A, 1234)
    assert status.cycles > 0
