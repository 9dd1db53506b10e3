"""Links: byte pipes to a device. `SimLink` runs the Verilator simulator of the device
top over a pipe, `SerialLink` a board's UART; `Device` (sw/runtime/device.py) speaks the
protocol over either.

The simulator binary is found by a key computed without the gateware: a hash of the
gateware's sources (hw/**/*.py), the C++ harness, the Verilator flags and versions, the
HwConfig and the frame timeout. A cached binary with that key runs as is, with no Amaranth
installed; a missing one is built by `python -m hw.simulator` in a child process (which
needs Amaranth and Verilator), never imported here.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hw.spec.config import HwConfig
from sw.runtime.util import ticking

__all__ = ["SIM_TIMEOUT_CYCLES", "Link", "LinkError", "LinkTimeout", "PipeLink", "SerialLink",
           "SimLink", "harness_binary"]

ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT = ROOT / "sim" / "sim_build"
#: What the simulator is made of besides hw/**/*.py: a change to any of these rebuilds it.
HARNESS_SOURCES = ("sim/harness_cpp/main.cpp",)
#: What the LiteDRAM top ("dram") is made of besides: the boards' DRAM configs and the
#: versions of the generator's packages.
DRAM_SOURCES = "boards/dram/*.yml"
DRAM_DISTS = ("litedram", "litex", "migen", "liteeth", "litescope")
#: Frame timeout (cycles) of the simulated device: short, so truncation tests are quick.
SIM_TIMEOUT_CYCLES = 20_000
#: A profile-guided build's preparation: (config, build folder) -> ``python -m
#: hw.simulator`` arguments (`sw.runtime.resident.memory_training`).
Training = Callable[[HwConfig, Path], tuple[str, ...]]


class LinkError(RuntimeError):
    """The link failed: port unavailable, simulator died, no reply after retries."""


class LinkTimeout(LinkError):
    """No (valid) reply within the timeout, after every retry."""


class Link(abc.ABC):
    """A byte pipe to a device."""

    #: Human-readable name for messages.
    name: str = "link"

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of `data`."""

    @abc.abstractmethod
    def read(self, timeout: float) -> bytes:
        """Bytes that arrive within `timeout` seconds (returns early once some arrived;
        empty on timeout)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link (idempotent)."""

    def __enter__(self) -> Link:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def simulator_key(cfg: HwConfig, timeout_cycles: int, sources: list[Path],
                  tags: tuple[str, ...] = (), dists: tuple[str, ...] = ()) -> str:
    """A simulator's cache key: `sources` (its files besides hw/**/*.py, read), `cfg`, the
    timeout, `tags`, and the versions of Amaranth, Verilator and `dists`."""
    h = hashlib.sha256()
    for f in sorted((ROOT / "hw").rglob("*.py")) + sources:
        h.update(f"{f.relative_to(ROOT)}\0".encode() + f.read_bytes() + b"\0")
    h.update("\0".join([cfg.to_json(), str(timeout_cycles), *tags,
                        f"amaranth {_version('amaranth')}",
                        f"verilator {_version('verilator')}"]).encode())
    h.update("".join(f"\0{d} {_version(d)}" for d in dists).encode())
    return h.hexdigest()


def build_simulator(cfg: HwConfig, timeout_cycles: int, build_dir: Path, key: str,
                    module: str, what: str, args: tuple[str, ...] = (),
                    prepare: Callable[[Path], tuple[str, ...]] | None = None) -> Path:
    """DIR/harness, built first by ``python -m module`` (which serialises concurrent builds
    of one directory) unless DIR/stamp.sha256 holds `key`; `prepare(DIR)`, called only
    when it builds, gives further arguments of the build."""
    binary, stamp = build_dir / "harness", build_dir / "stamp.sha256"
    if binary.exists() and stamp.exists() and stamp.read_text() == key:
        return binary
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "hw_config.json").write_text(cfg.to_json())
    print(f"building the {what} simulator of HwConfig {cfg.config_id_hex} in {build_dir} "
          "(a few minutes on 2 cores) ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", module, "--config", str(build_dir / "hw_config.json"),
           "--timeout-cycles", str(timeout_cycles), "--dir", str(build_dir), "--key", key,
           *args, *(prepare(build_dir) if prepare else ())]
    with ticking(f"building the {what} simulator"):
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0 or not binary.exists() or stamp.read_text() != key:
        raise LinkError(f"building the {what} simulator failed (exit {r.returncode}); see "
                        f"{build_dir / 'build.log'}:\n{(r.stderr or r.stdout)[-2000:]}")
    return binary


def harness_key(cfg: HwConfig, timeout_cycles: int, top: str = "stream") -> str:
    """The simulator's cache key: everything its binary depends on, read as files."""
    dram = top.startswith("dram")
    sources = [ROOT / f for f in HARNESS_SOURCES]
    if dram:
        sources += sorted(ROOT.glob(DRAM_SOURCES))
    return simulator_key(cfg, timeout_cycles, sources, (top,), DRAM_DISTS if dram else ())


def harness_binary(cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES,
                   top: str = "stream", train: Training | None = None) -> Path:
    """The simulator binary of the `top` device ("stream": today's streaming top;
    "memory": the device with its memory; "dram": the board's core, UART included, around
    the device on LiteDRAM's controller and SDRAM PHY model, "dram-CONFIG" the same with
    boards/dram/CONFIG.yml, either with "-nouart": without the UART) for `cfg` and
    `timeout_cycles`, built first if no build with the current key exists
    (sim/sim_build/device_harness-<top>-<id>-<timeout>/). With `train` (`train(cfg, DIR)`
    gives ``python -m hw.simulator``'s profiling arguments, or none for a plain build) it
    is built profile-guided, in its own folder (device_harness-<top>-pgo-...)."""
    kind = f"{top}-pgo" if train else top
    build_dir = BUILD_ROOT / f"device_harness-{kind}-{cfg.config_id_hex}-{timeout_cycles}"
    key = harness_key(cfg, timeout_cycles, top) + ("-pgo" if train else "")
    return build_simulator(cfg, timeout_cycles, build_dir, key, "hw.simulator", top,
                           ("--top", top), (lambda d: train(cfg, d)) if train else None)


class PipeLink(Link):
    """A running simulator's stdin / stdout as a link (`SimLink`; the UART side of the
    Ethernet simulator, `sw.runtime.udplink.EthSimLink.uart`). Closing it leaves the
    process to its owner."""

    def __init__(self, proc: subprocess.Popen, name: str) -> None:
        self._proc = proc
        self.name = name
        os.set_blocking(proc.stdout.fileno(), False)

    def write(self, data: bytes) -> None:
        if self._proc.poll() is not None:
            raise LinkError(f"{self.name} exited with status {self._proc.returncode}")
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except BrokenPipeError as e:
            raise LinkError(f"{self.name} closed its input") from e

    def read(self, timeout: float) -> bytes:
        import select  # POSIX pipes; imported here so that importing links needs no POSIX

        fd = self._proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        if not ready:
            return b""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return b""
        if not data and self._proc.poll() is not None:
            raise LinkError(f"{self.name} exited with status {self._proc.returncode}")
        return data

    def close(self) -> None:
        """Nothing to release here: the process belongs to the link that started it
        (`SimLink.close`, `EthSimLink.close`)."""


class SimLink(PipeLink):
    """The Verilator simulator of a device top as a subprocess, bytes over its
    stdin/stdout. After `close`, `cycles` holds the clock cycles the simulation ran and
    (memory top) `mem_stats` the memory model's counts.

    `top`: "stream" (the streaming device), "dram" (the board's core with its UART around
    the memory device on LiteDRAM's controller and its SDRAM PHY model, docs/dram.md;
    "dram-CONFIG": a board's system with boards/dram/CONFIG.yml, e.g. "dram-ulx3s_85f";
    either with "-nouart": the pipe feeds the device's bytes, no UART) or "memory" (the
    device with its
    memory, modelled by the harness; `harness_args` reach it: ``--load ADDR:FILE``
    preloads the memory, ``--dump ADDR:LEN:FILE`` writes it out at exit, ``--mem-latency
    N`` etc. set its timing, sim/harness_cpp/main.cpp). `train`: the simulator built
    profile-guided (`harness_binary`)."""

    def __init__(self, cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES,
                 top: str = "stream", harness_args: list[str] | tuple[str, ...] = (),
                 train: Training | None = None) -> None:
        self.binary = harness_binary(cfg, timeout_cycles, top, train)
        idle_limit = 2 * timeout_cycles + 1000
        self.cycles: int | None = None
        self.mem_stats: dict[str, int] = {}
        proc = subprocess.Popen([str(self.binary), str(idle_limit), *harness_args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        super().__init__(proc, f"{top} simulator (HwConfig {cfg.config_id_hex})")

    def cpu_seconds(self) -> float | None:
        """CPU seconds (user + system) the running simulator has used so far; None where
        /proc is not available (not Linux) or the simulator has exited."""
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self._proc.stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError):  # the simulator may have exited already
            self._proc.stdin.close()
        deadline = time.monotonic() + 30
        while self._proc.poll() is None and time.monotonic() < deadline:
            try:   # keep its output flowing, or a full pipe would block its exit
                os.read(self._proc.stdout.fileno(), 65536)
            except BlockingIOError:
                time.sleep(0.01)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        err = self._proc.stderr.read()
        self._proc.stdout.close()
        self._proc.stderr.close()
        for line in err.decode(errors="replace").splitlines():
            if line.startswith("harness:") and line.endswith("cycles"):
                self.cycles = int(line.split()[1])
            elif line.startswith("harness-mem:"):
                words = line.split()[1:]
                self.mem_stats = {k: int(v) for k, v in zip(words[::2], words[1::2],
                                                            strict=True)}


class SerialLink(Link):
    """A UART (e.g. the Arty's FT2232H) through pyserial, 8N1 at `baud`."""

    def __init__(self, port: str, baud: int) -> None:
        try:
            import serial
        except ImportError as e:
            raise LinkError("--port needs pyserial: pip install pyserial") from e
        self.name = f"serial port {port}"
        self.baud = baud
        try:
            self._port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial port {port} at {baud} baud: {e}") from e

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, timeout: float) -> bytes:
        self._port.timeout = max(timeout, 0.0)
        first = self._port.read(1)
        if not first:
            return b""
        self._port.timeout = 0
        return first + self._port.read(65536)

    def close(self) -> None:
        self._port.close()
