"""The accelerator with its memory: the layer engine fed and drained by the pass reader
and writer, run pass after pass by the sequencer, all on one memory port
(docs/memory.md)."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.engine import LayerEngine
from hw.memport import MemArbiter, mem_port
from hw.passio import READ_AHEAD_WORDS, PassReader, PassWriter
from hw.sequencer import Sequencer, program_layout, progress_layout
from hw.spec.config import HwConfig
from hw.spec.engine import LAYER_FIELDS

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """Runs programs (taken on ``run``; `Sequencer`) from the memory behind ``mem``;
    ``progress`` reports on the last one. ``host`` is a memory port for the device's own
    memory commands, sharing ``mem`` with the sequencer, the pass reader and the pass
    writer (`MemArbiter`)."""

    def __init__(self, cfg: HwConfig) -> None:
        self.cfg = cfg
        super().__init__({
            "run": In(stream.Signature(program_layout)),
            "progress": Out(progress_layout),
            "host": In(mem_port(cfg)),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        m.submodules.seq = seq = Sequencer(cfg)
        m.submodules.reader = rd = PassReader(cfg)
        m.submodules.writer = wr = PassWriter(cfg)
        m.submodules.engine = eng = LayerEngine(cfg)
        # (as many reads outstanding as the pass reader runs ahead)
        m.submodules.arb = arb = MemArbiter(cfg, 4, depth=READ_AHEAD_WORDS)

        # One memory port: descriptors and traces, reads, writes, the host's commands.
        for k, port in enumerate((seq.mem, rd.mem, wr.mem)):
            wiring.connect(m, port, arb.masters[k])
        wiring.connect(m, wiring.flipped(self.host), arb.masters[3])
        wiring.connect(m, arb.mem, wiring.flipped(self.mem))

        # The sequencer's pass to the engine's registers, the reader and the writer.
        wiring.connect(m, wiring.flipped(self.run), seq.run)
        for name, _ in LAYER_FIELDS:
            m.d.comb += getattr(eng.layer, name).eq(getattr(seq.desc, name))
        m.d.comb += [
            rd.desc.eq(seq.desc), wr.desc.eq(seq.desc),
            eng.start.eq(seq.start), rd.start.eq(seq.start), wr.start.eq(seq.start),
            seq.engine_ok.eq(eng.shape_ok), seq.engine_done.eq(eng.done),
            seq.engine_err.eq(eng.param_err), seq.engine_cycles.eq(eng.cycles),
            seq.io_busy.eq(rd.busy | wr.busy), seq.io_err.eq(rd.err | wr.err),
            self.progress.eq(seq.progress),
        ]

        # Data: parameters and input into the engine, its output to the writer.
        wiring.connect(m, rd.params, eng.params)
        wiring.connect(m, rd.i, eng.i)
        wiring.connect(m, eng.o, wr.i)
        return m
