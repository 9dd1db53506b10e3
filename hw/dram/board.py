"""A board's DRAM pins and clocking for its LiteDRAM core (docs/dram.md).

`core_connect` gives the `Instance` arguments that join a board core (generated without
``--sim``) to the board: its pads from the amaranth-boards resource (``sdram`` for SDR
SDRAM, ``ddr3`` for DDR3), its clock and reset. Two clockings:

- The core takes the system clock (GENSDRPHY: its CRG only synchronises the reset): the
  board's PLL makes ``sync`` at ``HwConfig.clock_hz`` (`hw.build`), the core runs on it,
  and the SDRAM's clock pin is ``sync`` through a DDR output register, inverted (the
  SDRAM samples mid-cycle, 180 degrees, as LiteX's ECP5 SDR targets do).
- The core has its own CRG (A7DDRPHY, ECP5DDRPHY: a PLL making the PHY's fast clocks
  from the oscillator, and the system clock): the oscillator goes to the core, and
  ``sync`` is the core's ``user_clk``.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, IOPort, Module, ResetSignal, Signal
from amaranth.lib import io

from hw.dram import DramError, GeneratedCore

__all__ = ["core_connect", "estimate_connect", "own_clocking"]

#: amaranth-boards subsignal -> (the core's pad name, the differential pair's N pad).
_SDR = {"clk_en": "sdram_cke", "cs": "sdram_cs_n", "we": "sdram_we_n", "ras": "sdram_ras_n",
        "cas": "sdram_cas_n", "ba": "sdram_ba", "a": "sdram_a", "dq": "sdram_dq",
        "dqm": "sdram_dm"}
_DDR3 = {"rst": "ddram_reset_n", "clk": "ddram_clk", "clk_en": "ddram_cke", "cs": "ddram_cs_n",
         "we": "ddram_we_n", "ras": "ddram_ras_n", "cas": "ddram_cas_n", "a": "ddram_a",
         "ba": "ddram_ba", "dqs": "ddram_dqs", "dq": "ddram_dq", "dm": "ddram_dm",
         "odt": "ddram_odt"}
#: The core's clock, reset and status ports that are not pads.
_CLOCKING = ("clk", "rst", "pll_locked", "user_clk", "user_rst", "clk_iodelay", "rst_iodelay")


def own_clocking(core: GeneratedCore) -> bool:
    """True when the core makes the system clock itself (its CRG has a PLL)."""
    return "user_clk" in core.meta["ports"] and "pll_locked" in core.meta["ports"]


def _pads(core: GeneratedCore) -> list[str]:
    return [n for n in core.meta["ports"] if n.startswith(("sdram_", "ddram_"))]


def _level(pin: io.SingleEndedPort, level: int) -> Const:
    """The buffer input that puts every pin of `pin` at the physical `level`."""
    return Const(sum((level ^ inv) << i for i, inv in enumerate(pin.invert)), len(pin))


def _prefix(name: str, port: object) -> str:
    d = {"input": "i", "output": "o", "inout": "io"}[name]
    return f"{d}_{port}"


def core_connect(m: Module, core: GeneratedCore, resource: object, osc: object = None,
                 rst: object = None, clk_out: object = None, rst_out: object = None,
                 locked: object = None) -> tuple[dict[str, object], tuple[str, ...]]:
    """The core's Instance arguments on a board, and the core ports left unconnected.

    `resource`: the DRAM resource requested with ``dir="-"`` (its raw pins go to the core,
    which drives the physical levels itself: active-low pins stay active low). Without
    own clocking the core runs on ``sync`` (`osc`/`rst`/... unused) and its clock pin
    is made here (a DDR output in `m`); with it, `osc` and `rst` go in and `clk_out`,
    `rst_out`, `locked` come out. Pins of the resource the core has no pad for (upper
    address lines of a smaller part) are driven low."""
    ports = core.meta["ports"]
    table = _SDR if core.meta["memtype"] == "SDR" else _DDR3
    conn: dict[str, object] = {}
    unused: list[str] = []
    for sub, pad in table.items():
        pin = getattr(resource, sub, None)
        if pin is None:
            raise DramError(f"the board's DRAM resource has no {sub!r} pins")
        if hasattr(pin, "p"):                # differential: the core drives P (ECP5) or both
            names = {"p": pad + "_p", "n": pad + "_n"}
            for half, name in names.items():
                if name not in ports:
                    raise DramError(f"the core has no pad {name}")
                if half == "n" and ports[name][0] == "input":
                    unused.append(name)      # ECP5: the N pin follows P through IO_TYPE
                else:
                    conn[_prefix(ports[name][0], name)] = getattr(pin, half)
            continue
        if pad not in ports:
            raise DramError(f"the core has no pad {pad}")
        width = ports[pad][1]
        if len(pin) < width:
            raise DramError(f"the board's {sub} has {len(pin)} pins, the core's {pad} {width}")
        conn[_prefix(ports[pad][0], pad)] = pin.io[:width]
        if len(pin) > width:                 # pins the core's part does not use
            m.submodules[f"dram_{sub}_spare"] = spare = io.Buffer("o", pin[width:])
            m.d.comb += spare.o.eq(_level(pin[width:], 0))
    for sub, level in (("vccio", 1), ("gnd", 0)):   # pseudo power pins of a DRAM bank
        pin = getattr(resource, sub, None)
        if pin is not None:
            m.submodules[f"dram_{sub}"] = tie = io.Buffer("o", pin)
            m.d.comb += tie.o.eq(_level(pin, level))
    missing = set(_pads(core)) - {k.split("_", 1)[1] for k in conn} - set(unused)
    if missing:
        raise DramError(f"the board's DRAM resource does not give pads {sorted(missing)}")
    if own_clocking(core):
        conn.update(i_clk=osc, i_rst=rst, o_user_clk=clk_out, o_user_rst=rst_out,
                    o_pll_locked=locked)
    else:
        sdram_clk = getattr(resource, "clk", None)
        if sdram_clk is None:
            raise DramError("the board's SDRAM resource has no clk pin")
        m.submodules.sdram_clk = ddr = io.DDRBuffer("o", sdram_clk)
        m.d.comb += [ddr.o[0].eq(0), ddr.o[1].eq(1)]   # falling edge of sync: 180 degrees
        conn.update(i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"))
    given = {k.split("_", 1)[1] for k in conn}
    unused += [n for n in _CLOCKING if n in ports and n not in given]
    return conn, tuple(unused)


def estimate_connect(core: GeneratedCore) -> tuple[dict[str, object], tuple[str, ...]]:
    """The core's Instance arguments for a resource estimate out of the board: every pad a
    top-level port, the clock from ``sync`` (own clocking: a port, its outputs unused)."""
    ports = core.meta["ports"]
    conn: dict[str, object] = {}
    for name in _pads(core):
        conn[_prefix(ports[name][0], name)] = IOPort(ports[name][1], name=name)
    if own_clocking(core):
        conn.update(i_clk=IOPort(1, name="osc"), i_rst=Const(0, 1),
                    o_user_clk=Signal(name="user_clk"), o_user_rst=Signal(name="user_rst"),
                    o_pll_locked=Signal(name="pll_locked"))
    else:
        conn.update(i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"))
    unused = tuple(n for n in _CLOCKING if n in ports and n not in {k.split("_", 1)[1]
                                                                     for k in conn})
    return conn, unused
