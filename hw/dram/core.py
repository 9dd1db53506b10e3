"""The generated LiteDRAM core as an Amaranth component (`LiteDRAMCore`) and the init that
runs without a CPU (`DramInit`)."""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.dram import DramError, GeneratedCore, InitWrite
from hw.memport import mem_port
from hw.spec.config import HwConfig
from hw.spec.protocol import CSR_LEVELED_WORD
from hw.top.command import csr_access

__all__ = ["CsrBridge", "DramInit", "LiteDRAMCore", "wishbone_ctrl"]


def wishbone_ctrl() -> wiring.Signature:
    """The core's ``wb_ctrl`` bus (Wishbone classic, 32-bit data, word addresses) as its
    master sees it."""
    return wiring.Signature({
        "adr": Out(30), "dat_w": Out(32), "sel": Out(4), "cyc": Out(1), "stb": Out(1),
        "we": Out(1), "dat_r": In(32), "ack": In(1), "err": In(1),
    })


class LiteDRAMCore(wiring.Component):
    """The generated core (``core``) as an instance in the ``sync`` domain.

    ``user``: the native user port, a `mem_port` of `cfg` seen from the memory (the word
    address is zero-extended to the core's); ``ctrl``: its CSR bus; ``init_done`` /
    ``init_error``: the core's status registers (its user port stays blocked until
    init_done is set and init_error is not).

    A simulation core (SDRAMPHYModel inside) needs nothing else: its only clock is
    ``clk``, from ``sync``. A board core has its clock, reset and pads: ``connect`` gives
    them as `Instance` arguments (``i_clk``, ``i_rst``, ``io_sdram_dq``, ``o_user_clk``,
    ...); every port of the core must be connected, here or by ``connect``, except the
    ones listed in ``unused`` (e.g. an ECP5 differential pair's N pin).
    """

    def __init__(self, cfg: HwConfig, core: GeneratedCore,
                 connect: dict[str, object] | None = None,
                 unused: tuple[str, ...] = ()) -> None:
        if core.data_bits != cfg.mem_data_bits:
            raise DramError(f"the core's port is {core.data_bits} bits, HwConfig "
                            f"mem_data_bits is {cfg.mem_data_bits}")
        if cfg.mem_bytes > int(core.meta["mem_bytes"]):
            raise DramError(f"HwConfig mem_bytes {cfg.mem_bytes} exceeds the DRAM's "
                            f"{core.meta['mem_bytes']} bytes")
        sim = bool(core.meta.get("sim"))
        if connect is None:
            if not sim:
                raise DramError("a board core needs its clock, reset and pads (connect=)")
            connect = {"i_clk": ClockSignal("sync"), "i_sim_trace": Const(0, 1)}
            unused = (*unused, "user_clk", "user_rst")     # ``sync`` itself
        self.cfg = cfg
        self.core = core
        self.connect = dict(connect)
        ports = set(core.meta["ports"])
        given = {k.split("_", 1)[1] for k in self.connect}
        p = core.user_port
        own = {n for n in ports if n.startswith((p + "_", "wb_ctrl_"))} | {"init_done",
                                                                          "init_error"}
        unknown = given - ports
        missing = ports - own - given - set(unused)
        if unknown or missing:
            raise DramError(f"LiteDRAM core {core.meta['config']}: "
                            + (f"no ports {sorted(unknown)}; " if unknown else "")
                            + (f"ports not connected: {sorted(missing)}" if missing else ""))
        super().__init__({
            "user": In(mem_port(cfg)),
            "ctrl": In(wishbone_ctrl()),
            "init_done": Out(1),
            "init_error": Out(1),
        })

    def elaborate(self, platform: object) -> Module:
        m = Module()
        u, c, p = self.user, self.ctrl, self.core.user_port
        addr = Signal(self.core.addr_bits)
        m.d.comb += addr.eq(u.cmd.payload.addr)
        m.submodules.core = Instance(
            self.core.meta["module"],
            o_init_done=self.init_done,
            o_init_error=self.init_error,
            **self.connect,
            **{
                f"i_{p}_cmd_valid": u.cmd.valid, f"o_{p}_cmd_ready": u.cmd.ready,
                f"i_{p}_cmd_we": u.cmd.payload.we, f"i_{p}_cmd_addr": addr,
                f"i_{p}_wdata_valid": u.wdata.valid, f"o_{p}_wdata_ready": u.wdata.ready,
                f"i_{p}_wdata_data": u.wdata.payload.data, f"i_{p}_wdata_we": u.wdata.payload.we,
                f"o_{p}_rdata_valid": u.rdata.valid, f"i_{p}_rdata_ready": u.rdata.ready,
                f"o_{p}_rdata_data": u.rdata.payload,
                "i_wb_ctrl_adr": c.adr, "i_wb_ctrl_dat_w": c.dat_w, "o_wb_ctrl_dat_r": c.dat_r,
                "i_wb_ctrl_sel": c.sel, "i_wb_ctrl_cyc": c.cyc, "i_wb_ctrl_stb": c.stb,
                "i_wb_ctrl_we": c.we, "o_wb_ctrl_ack": c.ack, "o_wb_ctrl_err": c.err,
                "i_wb_ctrl_cti": Const(0, 3), "i_wb_ctrl_bte": Const(0, 2),
            },
        )
        return m


class DramInit(wiring.Component):
    """Replays `program` (`hw.dram.init_program`) on the core's CSR bus after reset: each
    write is a Wishbone classic cycle, then its delay in cycles. ``done`` rises after the
    last write and stays; ``error`` if the bus answered a write with ``err`` (the replay
    stops there)."""

    def __init__(self, program: list[InitWrite]) -> None:
        if not program:
            raise DramError("an empty init program")
        self.program = program
        super().__init__({"bus": Out(wishbone_ctrl()), "done": Out(1), "error": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        prog, bus = self.program, self.bus
        idx = Signal(range(len(prog) + 1))
        wait = Signal(range(max(w.delay for w in prog) + 2))
        adr, val, dly = Signal(30), Signal(32), Signal.like(wait)
        with m.Switch(idx):
            for k, w in enumerate(prog):
                with m.Case(k):
                    m.d.comb += [adr.eq(w.adr), val.eq(w.value), dly.eq(w.delay)]
        m.d.comb += [bus.adr.eq(adr), bus.dat_w.eq(val), bus.sel.eq(0xF), bus.we.eq(1)]
        with m.FSM():
            with m.State("WRITE"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1)]
                with m.If(bus.err):
                    m.d.sync += self.error.eq(1)
                    m.next = "STOP"
                with m.Elif(bus.ack):
                    m.d.sync += wait.eq(dly)
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(wait != 0):
                    m.d.sync += wait.eq(wait - 1)
                with m.Elif(idx == len(prog) - 1):
                    m.d.sync += self.done.eq(1)
                    m.next = "STOP"
                with m.Else():
                    m.d.sync += idx.eq(idx + 1)
                    m.next = "WRITE"
            with m.State("STOP"):             # done or error: no more writes until reset
                pass
        return m


class CsrBridge(wiring.Component):
    """The host's CSR_READ / CSR_WRITE (``req``, `hw.top.command.csr_access`) as Wishbone
    classic cycles on the core's CSR bus (``bus``), and the device's own leveled flag:
    word `CSR_LEVELED_WORD` is not a bus access, a write sets ``leveled`` to its bit 0 and
    a read answers it. ``done`` follows the bus's ``ack`` (``err``: the reply is an
    error). Until reset ``leveled`` is 0."""

    def __init__(self) -> None:
        super().__init__({"req": In(csr_access()), "bus": Out(wishbone_ctrl()),
                          "leveled": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        req, bus = self.req, self.bus
        m.d.comb += [bus.adr.eq(req.addr), bus.dat_w.eq(req.wdata), bus.we.eq(req.we),
                     bus.sel.eq(0xF)]
        m.d.sync += [req.done.eq(0), req.err.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(req.go & (req.addr == CSR_LEVELED_WORD)):
                    with m.If(req.we):
                        m.d.sync += self.leveled.eq(req.wdata[0])
                    m.d.sync += [req.rdata.eq(self.leveled), req.done.eq(1)]
                with m.Elif(req.go):
                    m.next = "BUS"
            with m.State("BUS"):
                m.d.comb += [bus.cyc.eq(1), bus.stb.eq(1)]
                with m.If(bus.ack | bus.err):
                    m.d.sync += [req.rdata.eq(bus.dat_r), req.done.eq(1), req.err.eq(bus.err)]
                    m.next = "IDLE"
        return m
