"""The layer engine: one output-channel group of a conv layer (`LayerEngine`)."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw._pipe import StreamRegister
from hw.engine.control import LayerDecode, PassControl
from hw.engine.feeder import Feeder
from hw.engine.layouts import layer_layout, pair_layout
from hw.engine.output import OutputStage
from hw.engine.params import ParamLoader
from hw.engine.reorder import ReorderBuffer
from hw.engine.results import ResultIntake, Serializer
from hw.linebuf import WindowGen, input_layout
from hw.mac_array import MacArray
from hw.spec.config import DEFAULT, HwConfig

__all__ = ["LayerEngine"]


class LayerEngine(wiring.Component):
    """One output-channel group of a conv layer (port contract: docs/engine.md).

    Sequence: set ``layer`` (`layer_layout`), pulse ``start``; send the group's
    parameter block (`group_params`: padded OHWI weights, int32 LE biases, shift bytes)
    on ``params``, `HwConfig.param_beat` bytes a beat; stream the H x W x cin input map
    once on ``i`` (`input_layout`: one value a transfer, or two with ``two``; two a
    transfer fill row 0 of a 3x3 map at two a cycle); take ``OH * OW * cout`` values
    from ``o`` (HWC, int8 results sign-extended); ``done`` rises once the last output is
    taken and every conv result has drained. ``layer`` holds still from two cycles
    before ``start`` to ``done``.

    Timing: the MAC array runs ``ceil(cout/R) * k*k * ceil(cin/C)`` vectors per output
    pixel, one per cycle; the reorder buffer holds `BANKS` pixels so that the next pixels'
    windows (``cin`` cycles each) are written while the array works on the current one
    (`engine_cycles`). Latency from a pixel's complete window to its first output: about
    the pixel's array cycles + `mac_latency` + 17 (+ 5 with pooling).
    Backpressure: ``o.ready = 0`` stalls the engine without loss;
    ``params`` takes a weight beat every cycle and the bias and shift beats at a byte a
    cycle (extra beats set ``param_err``); ``i.ready`` is 0 until the parameters are
    loaded.

    Units (docs/engine.md): `LayerDecode` and `PassControl` (hw/engine/control.py),
    `ParamLoader` (params.py), the input register and `WindowGen`, `ReorderBuffer`
    (reorder.py), `Feeder` (feeder.py), `MacArray`, `ResultIntake` and `Serializer`
    (results.py), `OutputStage` (output.py).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "params": In(stream.Signature(8 * cfg.param_beat)),
            "i": In(stream.Signature(input_layout(cfg))),
            "o": Out(stream.Signature(signed(cfg.head_bits))),
            "layer": In(layer_layout(cfg)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "loaded": Out(1),
            "param_err": Out(1),
            "shape_ok": Out(1),
            "cycles": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        cfg = self.cfg
        m = Module()
        m.submodules.decode = dec = LayerDecode(cfg)
        m.submodules.control = ctl = PassControl(cfg)
        m.submodules.loader = ldr = ParamLoader(cfg)
        m.submodules.i_reg = i_reg = StreamRegister(input_layout(cfg))
        m.submodules.wgen = wgen = WindowGen(cfg)
        m.submodules.rob = rob = ReorderBuffer(cfg)
        m.submodules.feeder = fdr = Feeder(cfg)
        m.submodules.mac = mac = MacArray(cfg)
        m.submodules.intake = intake = ResultIntake(cfg)
        m.submodules.serializer = ser = Serializer(cfg)
        m.submodules.output = out = OutputStage(cfg)

        # Layer registers: decoded once; the units take the decoded setup, some of them
        # also registers that need no decoding.
        m.d.comb += [dec.layer.eq(self.layer), dec.busy.eq(ctl.busy)]
        for unit in (ctl, ldr, rob, fdr, intake, ser):
            m.d.comb += unit.setup.eq(dec.setup)
        for unit in (fdr, intake, ser, out):
            m.d.comb += unit.layer.eq(self.layer)
        for name in ("width", "height", "channels", "k3"):
            m.d.comb += getattr(wgen, name).eq(dec.window[name])
        m.d.comb += out.frame.eq(dec.pool)

        # Pass control and status.
        m.d.comb += [
            ctl.start.eq(self.start), ctl.shape_ok.eq(dec.shape_ok),
            ctl.loaded.eq(ldr.loaded), ctl.overflow.eq(ldr.overflow),
            ctl.res_last.eq(intake.last), ctl.conv.eq(out.conv), ctl.out.eq(out.out),
            ctl.o_valid.eq(self.o.valid),
            ldr.start.eq(ctl.go), intake.start.eq(ctl.go), out.clear.eq(ctl.go),
            self.busy.eq(ctl.busy), self.done.eq(ctl.done), self.loaded.eq(ldr.loaded),
            self.param_err.eq(ctl.param_err), self.shape_ok.eq(dec.shape_ok),
            self.cycles.eq(ctl.cycles),
        ]

        # Parameters, and the input once they are loaded (through a register stage: no
        # combinational path between `i` and the window generator).
        wiring.connect(m, wiring.flipped(self.params), ldr.params)
        m.d.comb += [
            i_reg.i.valid.eq(self.i.valid & ldr.loaded),
            i_reg.i.payload.eq(self.i.payload),
            self.i.ready.eq(i_reg.i.ready & ldr.loaded),
        ]

        # The datapath.
        wiring.connect(m, i_reg.o, wgen.i)
        wiring.connect(m, wgen.o, rob.i)
        wiring.connect(m, rob.pixel, fdr.pixel)
        wiring.connect(m, rob.rd, fdr.pix)
        wiring.connect(m, ldr.weights, fdr.weights)
        wiring.connect(m, fdr.o, mac.i)
        wiring.connect(m, mac.o, intake.i)
        if cfg.out_lanes > 1:           # results every cycle: `ResultIntake`'s timing
            m.submodules.res_reg = res_reg = StreamRegister(pair_layout(cfg))
            wiring.connect(m, intake.o, res_reg.i)
            wiring.connect(m, res_reg.o, ser.i)
        else:
            wiring.connect(m, intake.o, ser.i)
        wiring.connect(m, ldr.bias, ser.bias)
        wiring.connect(m, ldr.shift, ser.shift)
        wiring.connect(m, ser.o, out.i)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        return m
