"""The program runner: fetches pass descriptors from the device memory and runs them one
after the other on the engine and the pass reader and writer (hw/spec/memory.py)."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.dma import RangeReader, RangeWriter
from hw.memport import MemArbiter, mem_port
from hw.passio import decode_pass, pass_layout
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_S2, TAPS, out_value_bytes
from hw.spec.memory import PASS_BYTES, TRACE_BYTES
from hw.spec.protocol import Err

__all__ = ["Sequencer", "program_layout", "progress_layout"]

#: A program to run: the first descriptor's byte address, the number of passes, where the
#: trace records go (`hw.spec.memory.TRACE_FORMAT`).
program_layout = data.StructLayout({"addr": 32, "count": 16, "trace": 32})
#: What the host sees of a program: running, ended well, the error that stopped it
#: (`protocol.Err`: BAD_PROGRAM, BAD_ADDRESS; NONE), passes finished (the failing pass's
#: index on an error), clock cycles since it started (frozen at its end).
progress_layout = data.StructLayout({"running": 1, "done": 1, "error": 8, "passes": 16,
                                     "cycles": 32})

#: Cycles between a pass's registers and the engine's start: the engine judges the
#: registers as they were two cycles before (`LayerEngine.shape_ok`), the span and length
#: checks' pipeline (`Sequencer`'s products) takes five.
SETTLE = 5


class Sequencer(wiring.Component):
    """Runs a program taken on ``run`` (refused, not taken, while one runs).

    For each pass: the descriptor's `PASS_BYTES` bytes are read into ``desc`` (held until
    the pass ends); a descriptor whose field does not fit the gateware's registers ends the
    program with BAD_PROGRAM. Before anything of the pass starts, the engine must accept its
    registers (``engine_ok``, after `SETTLE` cycles; else BAD_PROGRAM) and every byte it
    reads or writes must lie in the memory (its parameter block, input and output spans as
    `hw.spec.memory.Pass` states them; else BAD_ADDRESS), and its parameter block must be
    the group's (``param_len == param_bytes``, ``param_addr`` a multiple of param_beat;
    else BAD_PROGRAM): a refused pass touches nothing.
    Then ``start`` pulses (the engine, the pass reader and the pass writer start the pass);
    the pass ends when the engine is done and the reader and writer are idle, and its trace
    record (cycles of the pass, the engine's ``engine_cycles``) is written at ``trace + k *
    TRACE_BYTES``. An engine or reader / writer error during a pass (``engine_err``,
    ``io_err``; not expected after the checks) ends the program with BAD_PROGRAM or
    BAD_ADDRESS as it stands. A descriptor or trace record past the memory: BAD_ADDRESS.
    ``progress`` says how far it got.
    """

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "run": In(stream.Signature(program_layout)),
            "desc": Out(pass_layout(cfg)),
            "start": Out(1),
            "engine_ok": In(1),
            "engine_done": In(1),
            "engine_err": In(1),
            "engine_cycles": In(32),
            "io_busy": In(1),
            "io_err": In(1),
            "progress": Out(progress_layout),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        m.submodules.fetch = rd = RangeReader(cfg, depth=4)
        m.submodules.trace = tw = RangeWriter(cfg)
        m.submodules.arb = arb = MemArbiter(cfg, 2, depth=4)
        wiring.connect(m, rd.mem, arb.masters[0])
        wiring.connect(m, tw.mem, arb.masters[1])
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))
        prog = self.progress

        addr = Signal(32)
        left = Signal(16)
        trace = Signal(32)
        pass_cycles = Signal(32)
        record = Signal(8 * TRACE_BYTES)
        nbyte = Signal(range(TRACE_BYTES + 1))    # 1 + the record byte being sent
        bi = Signal(range(TRACE_BYTES))
        m.d.comb += bi.eq(nbyte - 1)
        raw = Signal(8 * PASS_BYTES)
        view, fits = decode_pass(cfg, m, raw)
        wait = Signal(range(SETTLE + 1))

        # The pass's checks, computed over the SETTLE cycles in `products` (clocked in
        # SETTLE only, where they are judged: a simulator then skips them while the pass
        # runs), a pipeline whose every stage holds at most one multiply or one wide add or
        # compare (the builds' timing). Each register keeps its expression's full shape, so
        # the ends are the same integers as ``addr + (n - 1) * pitch + bytes``, written as
        # ``(addr + bytes - pitch) + n * pitch`` (one 18 x 16 multiply each, n_out's as
        # ``(w' * h' * pitch) << 2 * upsample``), then cut to the same widths.
        d = self.desc
        products: list = []

        def reg(expr: Value, name: str) -> Signal:
            r = Signal(Value.cast(expr).shape(), name=name)
            products.append(r.eq(expr))
            return r

        # The spans (hw.spec.memory.Pass.in_span / out_span): every end within the memory.
        vb = Mux(d.head, out_value_bytes(cfg, True), 1)
        s2 = d.pool == POOL_S2
        n_in = Signal(2 * (cfg.max_width.bit_length()))
        n_out = Signal(len(n_in) + 2)
        in_end = Signal(34 + 16)
        out_end = Signal(34 + 16)
        assert len(d.width) + len(d.height) <= len(n_in)
        n_pool = reg(Mux(s2, d.width >> 1, d.width) * Mux(s2, d.height >> 1, d.height), "n_pool")
        in_ac = reg(d.in_addr + d.cin, "in_ac")
        cv = reg(d.cout * vb, "cv")
        pa_end = reg(d.param_addr + d.param_len, "pa_end")
        products.append(n_in.eq(d.width * d.height))
        in_base = reg(in_ac - d.in_pitch, "in_base")
        in_prod = reg(n_in * d.in_pitch, "in_prod")
        out_ac = reg(d.out_addr + cv, "out_ac")
        out_q = reg(n_pool * d.out_pitch, "out_q")
        pa_ok = reg(pa_end <= cfg.mem_bytes, "pa_ok")
        products.append(n_out.eq(n_pool << Cat(0, d.upsample)))
        products.append(in_end.eq(in_base + in_prod))
        out_base = reg(out_ac - d.out_pitch, "out_base")
        products.append(out_end.eq(out_base + (out_q << Cat(0, d.upsample))))
        spans_ok = reg((in_end <= cfg.mem_bytes) & (out_end <= cfg.mem_bytes) & pa_ok
                       & (n_out != 0), "spans_ok")

        # The parameter block's length (`hw.spec.engine.param_bytes`): cout padded to R
        # rows x the flat walk (k*k*cin) padded to C, the tail (5 bytes a channel) padded
        # to param_beat.
        R, C = cfg.array_rows, cfg.array_cols

        def up(v: Value, n: int) -> Value:      # v rounded up to a multiple of n
            return (v + n - 1) & ~(n - 1) if n & (n - 1) == 0 else (v + n - 1) // n * n

        walk = reg(Mux(d.k3, (d.cin << 3) + d.cin, d.cin), "walk")
        rows = reg(up(d.cout, R), "rows")
        per_out = Signal(range(TAPS * cfg.max_in_channels + C))
        tail = Signal(32)
        plen = Signal(48)
        c5 = reg(5 * d.cout, "c5")
        products += [
            per_out.eq(up(walk, C)),
            tail.eq((c5 + cfg.param_beat - 1) & ~(cfg.param_beat - 1)),
        ]
        pl_prod = reg(rows * per_out, "pl_prod")
        products.append(plen.eq(pl_prod + tail))
        beat_bits = (cfg.param_beat - 1).bit_length()
        params_ok = reg((plen == d.param_len) & (d.param_addr[:beat_bits] == 0), "params_ok")
        m.d.comb += [rd.ranges.payload.addr.eq(addr), rd.ranges.payload.len.eq(PASS_BYTES),
                     rd.o.ready.eq(1),
                     tw.ranges.payload.addr.eq(trace), tw.ranges.payload.len.eq(TRACE_BYTES)]
        with m.If(prog.running):
            m.d.sync += [prog.cycles.eq(prog.cycles + 1), pass_cycles.eq(pass_cycles + 1)]

        def fail(code: Err) -> None:
            m.d.sync += [prog.running.eq(0), prog.error.eq(code)]
            m.next = "IDLE"

        with m.FSM(name="sequencer"):
            with m.State("IDLE"):
                m.d.comb += self.run.ready.eq(1)
                with m.If(self.run.valid):
                    m.d.sync += [addr.eq(self.run.payload.addr), left.eq(self.run.payload.count),
                                 trace.eq(self.run.payload.trace), prog.running.eq(1),
                                 prog.done.eq(0), prog.error.eq(Err.NONE), prog.passes.eq(0),
                                 prog.cycles.eq(0)]
                    with m.If(self.run.payload.count == 0):
                        fail(Err.BAD_PROGRAM)
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += pass_cycles.eq(1)
                with m.If((addr + PASS_BYTES > cfg.mem_bytes)
                          | (trace + TRACE_BYTES > cfg.mem_bytes)):
                    fail(Err.BAD_ADDRESS)
                with m.Else():
                    m.d.comb += rd.ranges.valid.eq(1)
                    with m.If(rd.ranges.ready):
                        m.next = "COLLECT"
            with m.State("COLLECT"):              # descriptor bytes, first byte lowest
                with m.If(rd.o.valid):
                    m.d.sync += raw.eq(Cat(raw[8:], rd.o.payload.data))
                    with m.If(rd.o.payload.last):
                        m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += [self.desc.eq(view), wait.eq(0)]
                with m.If(~fits):
                    fail(Err.BAD_PROGRAM)
                with m.Else():
                    m.next = "SETTLE"
            with m.State("SETTLE"):                # and the spans' products, registered
                m.d.sync += [wait.eq(wait + 1), *products]
                with m.If(wait == SETTLE):
                    with m.If(~self.engine_ok | ~params_ok):
                        fail(Err.BAD_PROGRAM)
                    with m.Elif(~spans_ok):
                        fail(Err.BAD_ADDRESS)
                    with m.Else():
                        m.next = "START"
            with m.State("START"):
                m.d.comb += self.start.eq(1)
                m.next = "STARTED"
            with m.State("STARTED"):              # the engine's `done` falls with `start`
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.engine_err):
                    fail(Err.BAD_PROGRAM)
                with m.Elif(self.io_err):
                    fail(Err.BAD_ADDRESS)
                with m.Elif(self.engine_done & ~self.io_busy):
                    m.d.sync += [record.eq(Cat(pass_cycles, self.engine_cycles)), nbyte.eq(0)]
                    m.next = "TRACE"
            with m.State("TRACE"):                # the pass's record, then the next pass
                m.d.comb += tw.ranges.valid.eq(nbyte == 0)
                with m.If(tw.ranges.valid & tw.ranges.ready):
                    m.d.sync += nbyte.eq(1)
                with m.If(nbyte != 0):
                    m.d.comb += [tw.i.valid.eq(1), tw.i.payload.eq(record.word_select(bi, 8))]
                    with m.If(tw.i.ready):
                        m.d.sync += nbyte.eq(nbyte + 1)
                        with m.If(nbyte == TRACE_BYTES):
                            m.next = "TRACED"
            with m.State("TRACED"):
                with m.If(~tw.busy):
                    m.d.sync += [prog.passes.eq(prog.passes + 1), addr.eq(addr + PASS_BYTES),
                                 trace.eq(trace + TRACE_BYTES), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += [prog.running.eq(0), prog.done.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "FETCH"
        return m
