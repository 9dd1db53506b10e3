"""The device memory port (LiteDRAM's native user port) and an arbiter sharing one port.

A port, seen from the master (`mem_port`), has three streams (docs/memory.md):

- ``cmd``: ``we`` (1: write, 0: read) and ``addr``, a *word* address (`HwConfig.mem_word_bytes`
  bytes a word);
- ``wdata``: ``data`` and ``we`` (one byte-enable bit per byte), one word per write
  command, in command order; it may be offered before, with or after its command;
- ``rdata``: ``data``, one word per read command, in command order. A master keeps
  ``rdata.ready`` high: LiteDRAM's port does not wait for it, so a master reserves room
  for every read before it issues it.

A read issued after a write to the same word reads the written data (the memory keeps
each port's commands in order; the arbiter keeps them in order across its masters).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.spec.config import HwConfig

__all__ = ["MemArbiter", "mem_addr_bits", "mem_cmd_layout", "mem_port", "mem_wdata_layout"]


def mem_addr_bits(cfg: HwConfig) -> int:
    """Bits of a word address."""
    return max(1, (cfg.mem_words - 1).bit_length())


def mem_cmd_layout(cfg: HwConfig) -> data.StructLayout:
    return data.StructLayout({"we": 1, "addr": mem_addr_bits(cfg)})


def mem_wdata_layout(cfg: HwConfig) -> data.StructLayout:
    return data.StructLayout({"data": cfg.mem_data_bits, "we": cfg.mem_word_bytes})


def mem_port(cfg: HwConfig) -> wiring.Signature:
    """A memory port as its master sees it (LiteDRAM's native user port)."""
    return wiring.Signature({
        "cmd": Out(stream.Signature(mem_cmd_layout(cfg))),
        "wdata": Out(stream.Signature(mem_wdata_layout(cfg))),
        "rdata": In(stream.Signature(cfg.mem_data_bits)),
    })


class MemArbiter(wiring.Component):
    """``n`` masters share the ``mem`` port.

    Commands: one master at a time is granted; it keeps the grant while it has commands,
    for at most ``burst`` commands when another master waits, then the grant moves to the
    next waiting master in turn (a change of grant costs one cycle). Every accepted command
    notes its master in order (a read tag queue and a write tag queue, ``depth`` each: at
    most ``depth`` reads and ``depth`` writes outstanding), and the read data and write
    data streams follow those notes, so each master sees its own port's order. Commands of
    different masters are forwarded in the order they are accepted.
    """

    def __init__(self, cfg: HwConfig, n: int, *, depth: int = 16, burst: int = 16) -> None:
        if n < 1:
            raise ValueError("an arbiter needs at least one master")
        self.cfg = cfg
        self.n = n
        self.depth = depth
        self.burst = burst
        super().__init__({
            "masters": In(mem_port(cfg)).array(n),
            "mem": Out(mem_port(cfg)),
        })

    def elaborate(self, platform: object) -> Module:
        n = self.n
        m = Module()
        m.submodules.rtag = rtag = SyncFIFO(width=max(1, (n - 1).bit_length()), depth=self.depth)
        m.submodules.wtag = wtag = SyncFIFO(width=max(1, (n - 1).bit_length()), depth=self.depth)
        cmds = [p.cmd for p in self.masters]

        # Grant: kept while its master has commands (up to `burst` while others wait),
        # else passed to the next master with a command, in turn.
        grant = Signal(range(n))
        count = Signal(range(self.burst + 1))
        want = Signal(n)
        m.d.comb += want.eq(sum(c.valid << k for k, c in enumerate(cmds)))
        granted_valid = Signal()
        granted_cmd = Signal(mem_cmd_layout(self.cfg))
        for k, c in enumerate(cmds):
            with m.If(grant == k):
                m.d.comb += [granted_valid.eq(c.valid), granted_cmd.eq(c.payload)]
        others = Signal()
        m.d.comb += others.eq((want & ~(1 << grant)) != 0 if n > 1 else 0)
        move = Signal()
        m.d.comb += move.eq(others & (~granted_valid | (count == self.burst)))
        nxt = Signal(range(n))                  # the first waiting master after `grant`
        with m.Switch(grant):
            for g in range(n):
                with m.Case(g):
                    choice = g
                    for step in range(n - 1, 0, -1):
                        cand = (g + step) % n
                        choice = Mux(want[cand], cand, choice)
                    m.d.comb += nxt.eq(choice)
        with m.If(move):
            m.d.sync += [grant.eq(nxt), count.eq(0)]

        # Forward the granted command while the tag queue it needs has room.
        room = Mux(granted_cmd.we, wtag.w_rdy, rtag.w_rdy)
        fire = Signal()
        m.d.comb += [
            self.mem.cmd.valid.eq(granted_valid & room & ~move),
            self.mem.cmd.payload.eq(granted_cmd),
            fire.eq(self.mem.cmd.valid & self.mem.cmd.ready),
            rtag.w_en.eq(fire & ~granted_cmd.we), rtag.w_data.eq(grant),
            wtag.w_en.eq(fire & granted_cmd.we), wtag.w_data.eq(grant),
        ]
        for k, c in enumerate(cmds):
            m.d.comb += c.ready.eq((grant == k) & self.mem.cmd.ready & room & ~move)
        with m.If(fire & ~move):
            m.d.sync += count.eq(count + 1)

        # Read data to the master of the oldest outstanding read; write data from the
        # master of the oldest outstanding write.
        for k, p in enumerate(self.masters):
            m.d.comb += [p.rdata.payload.eq(self.mem.rdata.payload),
                         p.rdata.valid.eq(self.mem.rdata.valid & rtag.r_rdy
                                          & (rtag.r_data == k))]
            with m.If(rtag.r_data == k):
                m.d.comb += self.mem.rdata.ready.eq(rtag.r_rdy & p.rdata.ready)
        m.d.comb += rtag.r_en.eq(self.mem.rdata.valid & self.mem.rdata.ready)
        for k, p in enumerate(self.masters):
            with m.If(wtag.r_data == k):
                m.d.comb += [self.mem.wdata.valid.eq(p.wdata.valid & wtag.r_rdy),
                             self.mem.wdata.payload.eq(p.wdata.payload)]
            m.d.comb += p.wdata.ready.eq(self.mem.wdata.ready & wtag.r_rdy
                                         & (wtag.r_data == k))
        m.d.comb += wtag.r_en.eq(self.mem.wdata.valid & self.mem.wdata.ready)
        return m
