"""The layer engine's control: the layer registers decoded (`LayerDecode`) and a pass's
start, end and status (`PassControl`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.engine.counters import map_counter
from hw.engine.layouts import layer_layout, pool_frame_layout, setup_layout, window_frame_layout
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import HPOOL_BLOCKS, POOL_NONE, POOL_S2, max_group

__all__ = ["LayerDecode", "PassControl"]

_IDLE_FRAME = {"width": 1, "height": 1, "channels": 1}


class LayerDecode(wiring.Component):
    """Layer registers in; their judgement and everything derived from them out, all
    from flip-flops.

    - ``shape_ok``: the registers describe a pass the engine runs (the limits of
      `hw.spec.engine.check_pass` except the group size, which `ParamLoader` checks as
      the weights arrive). Latency 2 cycles (``width * cin`` and ``width * cout`` are
      registered first; the other terms 1 cycle).
    - ``setup`` (`setup_layout`): modes and last indices, latency 1 cycle.
    - ``window`` and ``pool``: the frame ports of the window generator and the max pool,
      latency 1 cycle. While ``busy`` is 0 they describe a 1x1x1 frame (3x3 off, no
      pooling), so between passes both blocks wait at their first position whatever the
      registers hold (zero after reset, half written by the host).
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "layer": In(layer_layout(cfg)),
            "busy": In(1),
            "shape_ok": Out(1),
            "setup": Out(setup_layout(cfg)),
            "window": Out(window_frame_layout(cfg), init=_IDLE_FRAME),
            "pool": Out(pool_frame_layout(cfg), init=_IDLE_FRAME),
        })

    def elaborate(self, platform: object) -> Module:
        cfg, lay, s = self.cfg, self.layer, self.setup
        m = Module()

        # Shape check (the row products registered first).
        row_in, row_out = Signal(24), Signal(24)
        m.d.sync += [row_in.eq(lay.width * lay.cin), row_out.eq(lay.width * lay.cout)]
        legal = ((lay.width >= 1) & (lay.width <= cfg.max_width)
                 & (lay.height >= 1) & (lay.height <= cfg.max_width)
                 & (lay.cin >= 1) & (lay.cin <= cfg.max_in_channels)
                 & (lay.cout >= 1) & (lay.cout <= max_group(cfg))
                 & (lay.pool != 3) & ((lay.pool == POOL_NONE) | ~lay.head)
                 & (~lay.k3 | (row_in <= cfg.line_buffer_depth))
                 & ((lay.pool == POOL_NONE) | (row_out <= cfg.line_buffer_depth)))
        m.d.sync += self.shape_ok.eq(legal)

        # Modes (`column_pooled`) and the flat walk: k*k*cin products a pixel
        # (`hw.spec.engine.param_walk`; 9 * cin = 8 * cin + cin).
        s2 = lay.pool == POOL_S2
        hpool = s2 & (lay.cout <= HPOOL_BLOCKS * cfg.array_rows) & (lay.width >= 2)
        walk = Mux(lay.k3, (lay.cin << 3) + lay.cin, lay.cin)
        conv_w = Mux(hpool, lay.width >> 1, lay.width)          # requantized columns
        lanes = (lay.cout + cfg.out_lanes - 1) // cfg.out_lanes  # serializer transfers
        m.d.sync += [s.k3.eq(lay.k3), s.hpool.eq(hpool), s.walk.eq(walk)]

        # Last indices (value - 1) of the counters.
        m.d.sync += [
            s.cout_m1.eq(lay.cout - 1), s.ser_m1.eq(lanes - 1), s.cin_m1.eq(lay.cin - 1),
            s.walk_m1.eq(walk - 1), s.width_m1.eq(lay.width - 1),
            s.height_m1.eq(lay.height - 1), s.conv_w_m1.eq(conv_w - 1),
            s.out_w_m1.eq(Mux(s2, lay.width >> 1, lay.width) - 1),
            s.out_h_m1.eq(Mux(s2, lay.height >> 1, lay.height) - 1),
            s.out_none.eq(s2 & ((lay.width < 2) | (lay.height < 2))),
        ]

        # Frames of the window generator and the max pool: the pass's, or 1x1x1 between
        # passes.
        run = self.busy
        m.d.sync += [
            self.window.width.eq(Mux(run, lay.width, 1)),
            self.window.height.eq(Mux(run, lay.height, 1)),
            self.window.channels.eq(Mux(run, lay.cin, 1)),
            self.window.k3.eq(lay.k3 & run),
            self.pool.width.eq(Mux(run, conv_w, 1)),
            self.pool.height.eq(Mux(run, lay.height, 1)),
            self.pool.channels.eq(Mux(run, lanes, 1)),
            self.pool.stride2.eq(s2 & run),
            self.pool.vertical.eq(hpool & run),
        ]
        return m


class PassControl(wiring.Component):
    """A pass's start, end and status.

    - ``go`` (combinational): ``start`` while ``shape_ok``; it starts the pass (the
      parameter loader and result intake restart on it). A ``start`` while ``shape_ok``
      is 0 starts nothing and sets ``param_err``.
    - ``param_err``: sticky until the next ``go``: a refused start, or ``overflow`` (a
      parameter byte the loader could not place).
    - ``busy`` from ``go`` until the pass ends; then ``done`` until the next ``go``. The
      pass ends once the array's last result has been taken (``res_last``), every conv
      result has left the requantizer's register stage (``conv``: one pulse per transfer
      of `HwConfig.out_lanes` channels, counted over the conv map: ``conv_w_m1 + 1``
      columns, ``height_m1 + 1`` rows, ``ser_m1 + 1`` transfers) and every output has
      been taken: ``out`` pulses counted over the output map (or ``out_none``: there is
      none), then ``o_valid`` low (the output register empty). Pulses while not
      ``busy`` are ignored.
    - ``cycles``: cycles from ``loaded`` to the end of the pass; 0 from ``go``.

    All outputs but ``go`` are flip-flops; the end is seen one cycle after its last event.
    """

    def __init__(self, cfg: HwConfig = DEFAULT) -> None:
        self.cfg = cfg
        super().__init__({
            "setup": In(setup_layout(cfg)),
            "start": In(1),
            "shape_ok": In(1),
            "loaded": In(1),
            "overflow": In(1),
            "res_last": In(1),
            "conv": In(1),
            "out": In(1),
            "o_valid": In(1),
            "go": Out(1),
            "busy": Out(1),
            "done": Out(1),
            "param_err": Out(1),
            "cycles": Out(32),
        })

    def elaborate(self, platform: object) -> Module:
        s = self.setup
        m = Module()
        go = self.go
        m.d.comb += go.eq(self.start & self.shape_ok)

        # Error flag.
        with m.If(go):
            m.d.sync += self.param_err.eq(0)
        with m.Elif((self.start & ~self.shape_ok) | self.overflow):
            m.d.sync += self.param_err.eq(1)

        # Conv results and outputs counted over their maps.
        conv_last = map_counter(m, go, self.conv & self.busy, s.ser_m1, s.conv_w_m1,
                                s.height_m1, name="conv")
        out_last = map_counter(m, go, self.out & self.busy, s.cout_m1, s.out_w_m1,
                               s.out_h_m1, name="out")

        # Pass state: each end condition is kept once seen.
        conv_end, out_end, res_end = Signal(), Signal(), Signal()
        with m.If(go):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(0),
                         conv_end.eq(0), out_end.eq(0), res_end.eq(0)]
        with m.Elif(self.busy):
            with m.If(self.loaded):
                m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(conv_last):
                m.d.sync += conv_end.eq(1)
            with m.If(out_last):
                m.d.sync += out_end.eq(1)
            with m.If(self.res_last):
                m.d.sync += res_end.eq(1)
            with m.If((res_end | self.res_last) & (conv_end | conv_last)
                      & ((out_end & ~self.o_valid) | s.out_none)):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m

