"""The host link protocol, defined once for the gateware (hw/link.py, hw/top/) and the host
(sw/runtime/device.py). Part of the contract layer (`hw.spec`): no Amaranth, nothing of
ours outside it. See docs/protocol.md.

A frame on the wire, every multi-byte field little-endian:

    SYNC0 SYNC1 | opcode (1) | length (2) | payload (length bytes) | crc (2)

`crc` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor;
check value 0x29B1 for b"123456789") over opcode, length and payload. Requests carry an
`Op`; replies carry a `Reply` code: `OK` with the request's result, `DATA` for one chunk of
a long result (at most `MAX_PAYLOAD` bytes each, followed by an `OK`), `ERROR` with the
payload (error code `Err`, offending opcode).
"""

from __future__ import annotations

import binascii
import enum
import struct
import zlib
from dataclasses import dataclass, field

from hw.spec.engine import LAYER_FIELDS

__all__ = [
    "CSR_LEVELED_WORD",
    "CSR_READ_FORMAT",
    "CSR_VALUE_FORMAT",
    "CSR_WINDOW_WORDS",
    "CSR_WRITE_FORMAT",
    "FRAME_OVERHEAD",
    "IDENTIFY_FORMAT",
    "IDENTIFY_VERSION_OFFSET",
    "LAYER_FORMAT",
    "LAYER_SPANS",
    "MAX_PAYLOAD",
    "MEM_ADDR_FORMAT",
    "MEM_CRC_FORMAT",
    "MEM_MASK_FORMAT",
    "MEM_RANGE_FORMAT",
    "PROGRAM_FORMAT",
    "PROTOCOL_VERSION",
    "STATUS_FORMAT",
    "SYNC",
    "TIMEOUT_BYTE_TIMES",
    "DramFlag",
    "EngineFlag",
    "Err",
    "Feature",
    "Frame",
    "FrameDecoder",
    "Identity",
    "Op",
    "ProgramFlag",
    "ProtocolError",
    "Reply",
    "Status",
    "crc16",
    "crc16_update",
    "crc32",
    "crc32_update",
    "default_timeout_cycles",
    "encode_frame",
    "encode_layer",
    "record_mask",
]

#: Bumped whenever a frame layout, opcode or payload format changes.
PROTOCOL_VERSION = 8
#: The two sync bytes that open every frame.
SYNC = bytes((0xA5, 0x5A))
#: Longest payload of one frame (the device's receive buffer: one 1 KiB block RAM).
MAX_PAYLOAD = 1024
#: Sync, opcode, length and CRC bytes around a payload.
FRAME_OVERHEAD = len(SYNC) + 1 + 2 + 2
#: The device aborts a frame whose next byte does not come within this many byte times
#: at the config's UART rate (10 bits per byte).
TIMEOUT_BYTE_TIMES = 50_000


class Op(enum.IntEnum):
    """Request opcodes (host to device)."""
    IDENTIFY = 0x01      # -> OK Identity
    STATUS = 0x02        # -> OK Status
    ECHO = 0x03          # -> OK with the request's payload (link test)
    LAYER_CONFIG = 0x10  # LAYER_FORMAT: set the engine's registers, arm a pass -> OK
    LOAD_PARAMS = 0x11   # next bytes of the group's parameter stream -> OK
    RUN = 0x12           # next input bytes -> DATA chunks of output, then OK with the rest
    MEM_WRITE = 0x20     # MEM_ADDR_FORMAT address, then the bytes to write there -> OK
    MEM_READ = 0x21      # MEM_RANGE_FORMAT (address, length) -> DATA chunks, then OK
    MEM_CRC = 0x22       # MEM_RANGE_FORMAT -> OK with the range's CRC-32 (MEM_CRC_FORMAT)
    PROGRAM_RUN = 0x23   # PROGRAM_FORMAT (descriptor address, passes) -> OK; the program runs
    MEM_MASK = 0x24      # MEM_MASK_FORMAT -> DATA chunks, then OK: one bit per record,
                         # set when its int16 key exceeds the threshold (`record_mask`)
    CSR_READ = 0x25      # CSR_READ_FORMAT (word address) -> OK CSR_VALUE_FORMAT: a DRAM
                         # controller CSR (Feature.DRAM; docs/dram.md, read leveling)
    CSR_WRITE = 0x26     # CSR_WRITE_FORMAT (word address, value) -> OK


class Reply(enum.IntEnum):
    """Reply codes (device to host), in the opcode byte of a reply frame."""
    OK = 0x80
    ERROR = 0x81
    DATA = 0x82


class Err(enum.IntEnum):
    """Error codes, first payload byte of an ERROR reply."""
    NONE = 0x00
    BAD_CRC = 0x01         # CRC mismatch: the frame was dropped, nothing executed
    UNKNOWN_OPCODE = 0x02  # not an `Op`
    LENGTH_TOO_LONG = 0x03  # length field > MAX_PAYLOAD: the rest of the frame is skipped
    TIMEOUT = 0x04         # a frame stopped arriving mid-way (truncated)
    BAD_LENGTH = 0x05      # the payload length is wrong for the opcode
    UNSUPPORTED = 0x06     # a defined opcode this gateware build does not implement
    CONFIG_MISMATCH = 0x07  # request made for another HwConfig
    BUSY = 0x08            # LAYER_CONFIG while a pass is still running
    NOT_ARMED = 0x09       # LOAD_PARAMS without an armed pass waiting for parameters, RUN
                           # before the parameters are complete or with input after the end
    BAD_LAYER = 0x0A       # LAYER_CONFIG outside the engine's limits (docs/engine.md): no pass
    BAD_ADDRESS = 0x0B     # a memory range past the device memory, or a CSR word address
                           # outside CSR_WINDOW_WORDS: nothing read or written
    BAD_PROGRAM = 0x0C     # PROGRAM_RUN of no passes, or descriptors past the memory


class Feature(enum.IntFlag):
    """Bits of `Identity.features`."""
    ENGINE = 0x01          # a layer engine answers LAYER_CONFIG / LOAD_PARAMS / RUN
    MEMORY = 0x02          # device memory and programs: MEM_* and PROGRAM_RUN
    DRAM = 0x04            # the device memory is a DRAM whose controller initialises at
                           # boot: STATUS's `dram` flags say whether it is usable
    ETHERNET = 0x08        # the device also answers UDP (`hw.spec.udp`) at the IPv4 address
                           # and port IDENTIFY reports


#: IDENTIFY reply payload: config_id, protocol version, gateware version, max payload,
#: features, MAC array rows, MAC array cols, the device's IPv4 address (4 bytes, network
#: order) and UDP port (both zero without `Feature.ETHERNET`), the DRAM controller's CSR
#: layout (`hw.spec.dram.DramPhy`; 0 without `Feature.DRAM`). The protocol version stays at
#: byte 4 in every version, so a host can name the version of a reply it cannot decode.
IDENTIFY_FORMAT = "<IBBHBBB4sHB"
#: Byte offset of the protocol version in an IDENTIFY reply (`IDENTIFY_FORMAT`).
IDENTIFY_VERSION_OFFSET = 4
#: STATUS reply payload: cycles since reset (wraps at 2**32), good frames, bad frames
#: (both wrap at 2**16), last error code, engine flags (`EngineFlag`), engine cycles of
#: the last pass (from parameters complete to its end); the last program's flags
#: (`ProgramFlag`), its error (`Err`, NONE while it runs or when it ended well), the passes
#: it finished (on an error: the failing pass's index) and its cycles so far; the DRAM's
#: init flags (`DramFlag`; zero without `Feature.DRAM`).
STATUS_FORMAT = "<IHHBBIBBHIB"
#: MEM_WRITE payload head: the byte address the rest of the payload goes to.
MEM_ADDR_FORMAT = "<I"
#: MEM_READ / MEM_CRC payload: byte address and length of the range.
MEM_RANGE_FORMAT = "<II"
#: MEM_MASK payload: byte address of the first record, records, bytes per record, byte
#: offset of the record's little-endian int16 key, threshold (int16).
MEM_MASK_FORMAT = "<IHHHh"
#: CSR_READ payload: the word address of a CSR of the DRAM controller (the LiteDRAM core's
#: Wishbone CSR bus, byte address / 4), below CSR_WINDOW_WORDS.
CSR_READ_FORMAT = "<I"
#: CSR_WRITE payload: word address, the 32-bit value to write.
CSR_WRITE_FORMAT = "<II"
#: CSR_READ reply payload: the CSR's 32-bit value.
CSR_VALUE_FORMAT = "<I"
#: CSR word addresses CSR_READ / CSR_WRITE accept (LiteDRAM's core: four CSR banks of
#: 0x800 bytes); others answer ERROR BAD_ADDRESS.
CSR_WINDOW_WORDS = 0x800
#: A word of the window no LiteDRAM CSR uses (tests/test_dram.py checks): the device's own
#: leveled flag. CSR_WRITE of 1 marks the DRAM as read-leveled (STATUS: `DramFlag.LEVELED`
#: set, UNLEVELED cleared), 0 clears the mark; CSR_READ answers the flag.
CSR_LEVELED_WORD = CSR_WINDOW_WORDS - 1
#: MEM_CRC reply payload: CRC-32 (IEEE 802.3, as `zlib.crc32`) of the range.
MEM_CRC_FORMAT = "<I"
#: PROGRAM_RUN payload: byte address of the first pass descriptor (`hw.spec.memory`), the
#: number of passes, and where the device writes each pass's trace record
#: (`hw.spec.memory.TRACE_FORMAT`).
PROGRAM_FORMAT = "<IHI"
#: LAYER_CONFIG payload: the engine's layer registers (`hw.spec.engine.LAYER_FIELDS`:
#: width, height, cin, cout, k3, leaky, head, pool; docs/engine.md).
LAYER_FORMAT = "<" + "".join(fmt for _, fmt in LAYER_FIELDS)
#: Where each layer register sits in a LAYER_CONFIG payload: name -> (byte offset, byte
#: count), from `LAYER_FIELDS` (the gateware's LAYER_CONFIG loader decodes with it).
LAYER_SPANS: dict[str, tuple[int, int]] = {
    name: (struct.calcsize("<" + "".join(f for _, f in LAYER_FIELDS[:n])),
           struct.calcsize("<" + fmt))
    for n, (name, fmt) in enumerate(LAYER_FIELDS)}


class EngineFlag(enum.IntFlag):
    """Bits of `Status.engine`."""
    BUSY = 0x01
    DONE = 0x02
    LOADED = 0x04
    PARAM_ERR = 0x08


class DramFlag(enum.IntFlag):
    """Bits of `Status.dram` (devices with `Feature.DRAM`)."""
    INIT_DONE = 0x01       # the DRAM controller's init finished: the memory is usable
    INIT_ERROR = 0x02      # the init failed (the memory stays blocked until a reset)
    UNLEVELED = 0x04       # the init did not run the read leveling the PHY needs on a
                           # board (DDR3 without leveling: reads may be wrong; the driver's
                           # CRC checks tell); cleared once the host marks it LEVELED
    LEVELED = 0x08         # the host ran the read leveling and marked it (CSR_LEVELED_WORD)


class ProgramFlag(enum.IntFlag):
    """Bits of `Status.program`."""
    RUNNING = 0x01
    DONE = 0x02            # ended after its last pass (not set after an error)


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol."""


@dataclass(frozen=True)
class Identity:
    """The IDENTIFY reply; `ip` (IPv4 as an integer) and `udp_port` are the device's
    Ethernet address where `features` has `Feature.ETHERNET`, else zero; `dram_phy` the
    DRAM controller's CSR layout (`hw.spec.dram.DramPhy`) where it has `Feature.DRAM`."""

    config_id: int
    protocol_version: int
    gateware_version: int
    max_payload: int
    features: Feature
    array_rows: int
    array_cols: int
    ip: int = 0
    udp_port: int = 0
    dram_phy: int = 0

    @property
    def ethernet(self) -> str | None:
        """``A.B.C.D:PORT`` where the device answers UDP (`Feature.ETHERNET`), else None."""
        if not self.features & Feature.ETHERNET:
            return None
        return f"{'.'.join(str(b) for b in self.ip.to_bytes(4, 'big'))}:{self.udp_port}"

    @staticmethod
    def version_of(payload: bytes) -> int | None:
        """The protocol version an IDENTIFY reply of any version carries (None: too short)."""
        return payload[IDENTIFY_VERSION_OFFSET] if len(payload) > IDENTIFY_VERSION_OFFSET else None

    @classmethod
    def decode(cls, payload: bytes) -> Identity:
        """The reply of this protocol version; ProtocolError for any other length, or for
        an Ethernet address without `Feature.ETHERNET`."""
        if len(payload) != struct.calcsize(IDENTIFY_FORMAT):
            raise ProtocolError(f"IDENTIFY reply has {len(payload)} bytes, expected "
                                f"{struct.calcsize(IDENTIFY_FORMAT)}")
        cid, pv, gv, mp, feat, rows, cols, ip, port, phy = struct.unpack(IDENTIFY_FORMAT,
                                                                         payload)
        features = Feature(feat)
        if not features & Feature.ETHERNET and (any(ip) or port):
            raise ProtocolError("IDENTIFY reply has an Ethernet address without the "
                                "ETHERNET feature")
        if phy and not features & Feature.DRAM:
            raise ProtocolError("IDENTIFY reply names a DRAM CSR layout without the DRAM "
                                "feature")
        return cls(cid, pv, gv, mp, features, rows, cols, int.from_bytes(ip, "big"), port,
                   phy)

    def encode(self) -> bytes:
        return struct.pack(IDENTIFY_FORMAT, self.config_id, self.protocol_version,
                           self.gateware_version, self.max_payload, int(self.features),
                           self.array_rows, self.array_cols, self.ip.to_bytes(4, "big"),
                           self.udp_port, self.dram_phy)


@dataclass(frozen=True)
class Status:
    cycles: int
    frames_ok: int
    frames_bad: int
    last_error: int
    engine: int = 0
    engine_cycles: int = 0
    program: int = 0
    program_error: int = 0
    passes: int = 0
    program_cycles: int = 0
    dram: int = 0

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        if len(payload) != struct.calcsize(STATUS_FORMAT):
            raise ProtocolError(f"STATUS reply has {len(payload)} bytes, expected "
                                f"{struct.calcsize(STATUS_FORMAT)}")
        cyc, ok, bad, err, eng, ecyc, prog, perr, passes, pcyc, dram = struct.unpack(
            STATUS_FORMAT, payload)
        return cls(cyc, ok, bad, err, EngineFlag(eng), ecyc, ProgramFlag(prog), perr, passes,
                   pcyc, DramFlag(dram))

    def encode(self) -> bytes:
        return struct.pack(STATUS_FORMAT, self.cycles, self.frames_ok, self.frames_bad,
                           self.last_error, int(self.engine), self.engine_cycles,
                           int(self.program), self.program_error, self.passes,
                           self.program_cycles, int(self.dram))


def default_timeout_cycles(uart_divisor: int) -> int:
    """Inter-byte timeout (clock cycles) of a board build: TIMEOUT_BYTE_TIMES byte times
    of 10 bits at `uart_divisor` cycles per bit."""
    return TIMEOUT_BYTE_TIMES * 10 * uart_divisor


def encode_layer(**regs: int) -> bytes:
    """The LAYER_CONFIG payload of the given layer registers (every `LAYER_FIELDS` name)."""
    names = [name for name, _ in LAYER_FIELDS]
    if sorted(regs) != sorted(names):
        raise ProtocolError(f"LAYER_CONFIG needs exactly the registers {', '.join(names)}; "
                            f"got {', '.join(sorted(regs))}")
    try:
        return struct.pack(LAYER_FORMAT, *(int(regs[n]) for n in names))
    except struct.error as e:
        raise ProtocolError(f"a layer register does not fit LAYER_CONFIG: {e}") from e


# -- CRC-16/CCITT-FALSE ---------------------------------------------------------------
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


def crc16_update(crc: int, byte: int) -> int:
    """One byte into the CRC register, MSB first (the gateware computes the same)."""
    crc ^= (byte & 0xFF) << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of `data` (check: crc16(b"123456789") == 0x29B1).

    `binascii.crc_hqx` is this CRC (polynomial 0x1021, MSB first, no final xor), in C;
    the tests check it against the bit-serial `crc16_update` the gateware mirrors.
    """
    return binascii.crc_hqx(data, crc)


# -- CRC-32 (MEM_CRC) ----------------------------------------------------------------
CRC32_POLY = 0xEDB88320   # IEEE 802.3, reflected
CRC32_INIT = 0xFFFFFFFF


def crc32_update(crc: int, byte: int) -> int:
    """One byte into the (reflected) CRC-32 register, LSB first, as the gateware does;
    `crc32` starts at CRC32_INIT and inverts the result, as `zlib.crc32`."""
    crc ^= byte & 0xFF
    for _ in range(8):
        crc = (crc >> 1) ^ CRC32_POLY if crc & 1 else crc >> 1
    return crc


def crc32(data: bytes) -> int:
    """CRC-32 of `data`, what MEM_CRC answers (`zlib.crc32`, in C; the tests check it
    against the bit-serial `crc32_update` the gateware mirrors)."""
    return zlib.crc32(data)


# -- MEM_MASK -------------------------------------------------------------------------
def record_mask(data: bytes, record_bytes: int, key_offset: int, threshold: int) -> bytes:
    """What MEM_MASK answers for the records in `data`: bit n of byte n // 8 (LSB first)
    set when record n's little-endian int16 at `key_offset` is greater than `threshold`;
    the last byte's unused bits are 0."""
    n = len(data) // record_bytes
    out = bytearray((n + 7) // 8)
    for k in range(n):
        key = int.from_bytes(data[k * record_bytes + key_offset:][:2], "little", signed=True)
        if key > threshold:
            out[k // 8] |= 1 << (k % 8)
    return bytes(out)


# -- frames -------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(self.opcode, self.payload)


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame; raises ProtocolError for a bad opcode or too long payload."""
    if not 0 <= int(opcode) <= 0xFF:
        raise ProtocolError(f"opcode {opcode} does not fit a byte")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}"
                            " (split it into chunks)")
    body = struct.pack("<BH", int(opcode), len(payload)) + payload
    return SYNC + body + struct.pack("<H", crc16(body))


@dataclass
class FrameDecoder:
    """Incremental decoder: `feed` bytes as they arrive, get the complete good frames.

    Bytes before a SYNC are skipped; a frame with a bad CRC or a length over MAX_PAYLOAD is
    dropped (counted in `errors`, described in `last_error`) and the search for the next
    SYNC starts at the byte after the dropped frame's first sync byte, so a frame hidden
    behind garbage that looked like a header is still found. A partial frame stays
    buffered (`pending`); the caller's timeout decides when it is truncated.
    """

    max_payload: int = MAX_PAYLOAD
    errors: int = 0
    skipped: int = 0
    last_error: str = ""
    _buf: bytearray = field(default_factory=bytearray)

    @property
    def pending(self) -> int:
        """Bytes buffered towards a frame not yet complete."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while True:
            start = self._buf.find(SYNC)
            if start < 0:
                # keep a trailing first sync byte: its partner may come with the next feed
                keep = 1 if self._buf[-1:] == SYNC[:1] else 0
                self.skipped += len(self._buf) - keep
                del self._buf[:len(self._buf) - keep]
                return out
            self.skipped += start
            del self._buf[:start]
            if len(self._buf) < 5:
                return out
            opcode, length = struct.unpack_from("<BH", self._buf, 2)
            if length > self.max_payload:
                self._drop(f"length {length} > max payload {self.max_payload}")
                continue
            total = 5 + length + 2
            if len(self._buf) < total:
                return out
            body = bytes(self._buf[2:5 + length])
            (crc,) = struct.unpack_from("<H", self._buf, 5 + length)
            if crc != crc16(body):
                self._drop(f"bad CRC (got {crc:#06x}, computed {crc16(body):#06x}) on a "
                           f"frame with opcode {opcode:#04x}, length {length}")
                continue
            out.append(Frame(opcode, body[3:]))
            del self._buf[:total]

    def _drop(self, why: str) -> None:
        self.errors += 1
        self.last_error = why
        self.skipped += 1
        del self._buf[:1]
