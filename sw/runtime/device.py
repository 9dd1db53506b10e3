"""The device driver: `Device` speaks the framed protocol (`hw.spec.protocol`) over a
`Link` (sw/runtime/link.py).

Each request is one frame, answered by one reply frame; a request whose reply does not
arrive within `timeout` seconds, arrives corrupted, or is answered with a transmission
error (BAD_CRC, TIMEOUT) is sent again, at most `retries` more times. Every other ERROR
reply raises `DeviceError` naming the error. `run_group` runs one engine pass; the
network schedule is `sw.runtime.scheduler`.

On a DRAM whose PHY needs read leveling (STATUS `DramFlag.UNLEVELED`), `check_memory`
(called before a network is uploaded) runs it over CSR_READ / CSR_WRITE
(`sw.runtime.leveling`) unless the Device was made with ``level=False``; the result is
in `Device.leveling`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import numpy as np

from hw.spec import protocol
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.dram import CSR_MAPS, DramPhy
from hw.spec.engine import POOL_S2, PassError, check_pass, group_params, out_value_bytes
from hw.spec.protocol import (
    DramFlag,
    EngineFlag,
    Err,
    Feature,
    Frame,
    FrameDecoder,
    Identity,
    Op,
    Reply,
    Status,
)
from sw.runtime.link import Link, LinkError, LinkTimeout

__all__ = ["ConfigMismatchError", "Device", "DeviceError", "DeviceModeError"]


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


class DeviceModeError(RuntimeError):
    """The device cannot serve what the host asks in its mode or state: a network on a
    device with neither engine nor memory, device memory on a streaming device, a DRAM
    whose init failed or has not finished."""


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


# -- protocol client --------------------------------------------------------------------
class Device:
    """Protocol client over a `Link`; counts the bytes it moves (`bytes_out`, `bytes_in`)."""

    #: ERROR codes that mean the request was garbled on the way: sent again.
    RETRY_ERRORS = (Err.BAD_CRC, Err.TIMEOUT)

    def __init__(self, link: Link, timeout: float = 2.0, retries: int = 2,
                 level: bool = True) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries non-negative")
        self.link = link
        #: Run the read leveling in `check_memory` where the DRAM needs it.
        self.level = level
        #: The read leveling's result once `check_memory` ran it.
        self.leveling = None
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

    def request(self, opcode: Op, payload: bytes = b"", idempotent: bool = True,
                timeout: float | None = None) -> bytes:
        """Send one request, return the OK reply's payload, DATA chunks before it
        prepended (see the module docstring). A request that is not `idempotent` is
        resent only when the device reports it was not executed (BAD_CRC, TIMEOUT).
        `timeout` (default: the device's) bounds the wait for each reply frame: a request
        that runs longer must say so, or its late reply would answer the next request."""
        timeout = self.timeout if timeout is None else timeout
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
                reply = self._read_frame(time.monotonic() + timeout)
                if reply is None or reply.opcode != Reply.DATA:
                    break
                data += reply.payload
            if reply is None:
                problem = (f"no reply within {timeout} s" if self._decoder.errors == errors
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
        payload = self.request(Op.IDENTIFY)
        version = Identity.version_of(payload)     # first: another version's reply differs
        if version is not None and version != protocol.PROTOCOL_VERSION:
            raise LinkError(f"{self.link.name} speaks protocol version "
                            f"{version}, this host {protocol.PROTOCOL_VERSION}")
        ident = Identity.decode(payload)
        if expect is not None:
            want = expect.config_id if isinstance(expect, HwConfig) else int(expect)
            if ident.config_id != want:
                raise ConfigMismatchError(want, ident.config_id)
            if isinstance(expect, HwConfig):
                self._config = expect
        return ident

    def status(self) -> Status:
        return Status.decode(self.request(Op.STATUS))

    def check_memory(self, ident: Identity) -> None:
        """Refuse a device whose memory cannot be used: one without `Feature.MEMORY`, or on
        a DRAM (`Feature.DRAM`) whose init failed or has not finished (STATUS). A DRAM
        STATUS reports UNLEVELED is read-leveled first (`sw.runtime.leveling.level`;
        `LevelingError` when it finds no working setting) where IDENTIFY names a layout
        with leveling registers and ``level`` is on."""
        if not ident.features & Feature.MEMORY:
            raise DeviceModeError(f"{self.link.name} is a streaming device (no device "
                                  "memory)")
        if not ident.features & Feature.DRAM:
            return
        flags = DramFlag(self.status().dram)
        if flags & DramFlag.INIT_ERROR or not flags & DramFlag.INIT_DONE:
            state = "failed" if flags & DramFlag.INIT_ERROR else "has not finished"
            raise DeviceModeError(
                f"{self.link.name}: the DRAM controller's init {state} (STATUS dram flags "
                f"{int(flags):#04x}): its memory cannot be used. Reset the board; if it "
                "persists, the DRAM or its clocking is at fault (README, Boards: "
                "troubleshooting)")
        try:
            cmap = CSR_MAPS.get(DramPhy(ident.dram_phy))
        except ValueError:          # a layout this host does not know: nothing to level with
            cmap = None
        if flags & DramFlag.UNLEVELED and self.level and cmap is not None and cmap.leveling:
            from sw.runtime.leveling import level
            self.leveling = level(self, cmap)

    # -- the DRAM controller's CSRs (Feature.DRAM) ---------------------------------------
    def csr_read(self, addr: int) -> int:
        """The 32-bit CSR at word `addr` of the DRAM controller (`hw.spec.dram`)."""
        self._check_csr(addr)
        got = self.request(Op.CSR_READ, struct.pack(protocol.CSR_READ_FORMAT, addr))
        if len(got) != struct.calcsize(protocol.CSR_VALUE_FORMAT):
            raise LinkError(f"CSR_READ on {self.link.name}: {len(got)} reply bytes, expected "
                            f"{struct.calcsize(protocol.CSR_VALUE_FORMAT)}")
        return struct.unpack(protocol.CSR_VALUE_FORMAT, got)[0]

    def csr_write(self, addr: int, value: int) -> None:
        """Write `value` to the CSR at word `addr` (resent only when the device reports it
        was not executed: some CSRs act on each write)."""
        self._check_csr(addr)
        if not 0 <= value < 1 << 32:
            raise ValueError(f"CSR value {value} does not fit 32 bits")
        self.request(Op.CSR_WRITE, struct.pack(protocol.CSR_WRITE_FORMAT, addr, value),
                     idempotent=False)

    @staticmethod
    def _check_csr(addr: int) -> None:
        if not 0 <= addr < protocol.CSR_WINDOW_WORDS:
            raise ValueError(f"CSR word address {addr:#x} outside the device's window "
                             f"0..{protocol.CSR_WINDOW_WORDS - 1:#x}")

    def echo(self, payload: bytes) -> bytes:
        got = self.request(Op.ECHO, payload)
        if got != payload:
            raise LinkError(f"ECHO on {self.link.name} returned different bytes")
        return got

    # -- device memory and programs (Feature.MEMORY) ---------------------------------
    def mem_write(self, addr: int, data: bytes,
                  progress: Callable[[int], None] | None = None) -> None:
        """Write `data` at byte address `addr` (in MAX_PAYLOAD-sized frames; `progress`
        gets the bytes written so far)."""
        step = protocol.MAX_PAYLOAD - struct.calcsize(protocol.MEM_ADDR_FORMAT)
        for off in range(0, len(data), step):
            self.request(Op.MEM_WRITE, struct.pack(protocol.MEM_ADDR_FORMAT, addr + off)
                         + data[off:off + step])
            if progress:
                progress(min(off + step, len(data)))

    def mem_read(self, addr: int, length: int) -> bytes:
        """`length` bytes from byte address `addr` (in requests of at most the link's
        `max_reply` bytes where it has one: a UDP reply is one datagram)."""
        step = getattr(self.link, "max_reply", None)
        if step and length > step:
            return b"".join(self.mem_read(addr + off, min(step, length - off))
                            for off in range(0, length, step))
        got = self.request(Op.MEM_READ, struct.pack(protocol.MEM_RANGE_FORMAT, addr, length))
        if len(got) != length:
            raise LinkError(f"MEM_READ on {self.link.name}: {len(got)} bytes, expected {length}")
        return got

    def mem_crc(self, addr: int, length: int) -> int:
        """The device's CRC-32 of `length` bytes from `addr` (`protocol.crc32`); the device
        reads a byte per cycle, so the reply may take `length` cycles (10 us a byte are
        allowed, the pace of a simulated device)."""
        got = self.request(Op.MEM_CRC, struct.pack(protocol.MEM_RANGE_FORMAT, addr, length),
                           timeout=self.timeout + length * 1e-5)
        return struct.unpack(protocol.MEM_CRC_FORMAT, got)[0]

    def mem_mask(self, addr: int, records: int, record_bytes: int, key_offset: int,
                 threshold: int) -> np.ndarray:
        """Which of `records` records of `record_bytes` bytes from `addr` have their int16
        at `key_offset` above `threshold` (MEM_MASK, `protocol.record_mask`): a bool array.
        The device reads a byte per cycle (10 us a byte are allowed, as for MEM_CRC).
        In requests of at most 65,535 records, and of at most 8 * `max_reply` where the
        link has one (a UDP reply is one datagram)."""
        step = min(0xFFFF, 8 * getattr(self.link, "max_reply", 0x2000))
        if records > step:
            return np.concatenate([
                self.mem_mask(addr + k * record_bytes, min(step, records - k), record_bytes,
                              key_offset, threshold) for k in range(0, records, step)])
        got = self.request(Op.MEM_MASK, struct.pack(protocol.MEM_MASK_FORMAT, addr, records,
                                                    record_bytes, key_offset, threshold),
                           timeout=self.timeout + records * record_bytes * 1e-5)
        if len(got) != (records + 7) // 8:
            raise LinkError(f"MEM_MASK on {self.link.name}: {len(got)} bytes, expected "
                            f"{(records + 7) // 8}")
        return np.unpackbits(np.frombuffer(got, np.uint8), bitorder="little")[:records] == 1

    def program_run(self, addr: int, passes: int, trace: int) -> None:
        """Start the program of `passes` descriptors at `addr` (trace records at `trace`);
        it runs on while STATUS says so."""
        self.request(Op.PROGRAM_RUN, struct.pack(protocol.PROGRAM_FORMAT, addr, passes, trace),
                     idempotent=False)

    # -- layer engine ---------------------------------------------------------------
    def run_group(self, x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: np.ndarray, *,
                  leaky: bool, head: bool, pool: int = 0,
                  cfg: HwConfig | None = None) -> tuple[np.ndarray, int]:
        """One engine pass (docs/engine.md): the (OH, OW, cout) output of one output-channel
        group and the engine's cycles. x: (H, W, cin) int8; w: (cout, k, k, cin) OHWI int8;
        b: (cout,) int32; shift: (cout,). `cfg`: the device's HwConfig (head width)."""
        cfg = cfg or self._config
        h, wd, cin = x.shape
        cout, k = w.shape[0], w.shape[1]
        if w.shape[1:] != (k, k, cin):
            raise PassError(f"weights {w.shape} do not fit input {x.shape}")
        check_pass(cfg, h, wd, cin, cout, k, pool, head)
        oh, ow = (h // 2, wd // 2) if pool == POOL_S2 else (h, wd)
        nb = out_value_bytes(cfg, head)
        self.request(Op.LAYER_CONFIG, protocol.encode_layer(
            width=wd, height=h, cin=cin, cout=cout, k3=k == 3, leaky=leaky, head=head,
            pool=pool))
        params = group_params(cfg, w, b, shift)
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
