"""The device memory and the program that runs the network from it (docs/memory.md).

The device keeps the network in its memory (DRAM behind a LiteDRAM native port): every
output-channel group's parameters, every tensor, and the *program*, a list of pass
descriptors. A pass is one engine pass (`hw.spec.engine`): it reads the group's parameter
block, reads its input tensor, runs, and writes its output into a tensor. Addresses are
byte addresses; tensors are HWC, one value per channel (int8, or `head_bits` values of
`out_value_bytes` bytes little-endian for the detection heads).

Addressing of one pass (H, W, cin: the input; OH, OW: the output after the pool; vb: the
output value's bytes):

- input value (y, x, c) is the byte at ``in_addr + (y * W + x) * in_pitch + c``
  (``in_pitch >= cin``: a pass may read some channels of a wider tensor);
- output value (y, x, c) goes to ``out_addr + (y * OW + x) * out_pitch + c * vb``, or with
  ``upsample`` set to the four places ``out_addr + ((2y+i) * 2*OW + 2x+j) * out_pitch +
  c * vb`` for i, j in {0, 1} (nearest 2x upsampling, as Darknet's upsample layer);
- the parameters are ``param_len`` bytes at ``param_addr`` in `engine.group_params` order
  (``param_len == engine.param_bytes(cfg, k, cin, cout)``).

A route that concatenates convolutions costs nothing: each writes at its channel offset
(``out_addr`` = tensor base + offset) with the concatenation's pitch.

Part of the contract layer (`hw.spec`): plain Python, nothing outside `hw.spec`.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass

from hw.spec.config import HwConfig
from hw.spec.engine import LAYER_FIELDS, POOL_S2, engine_cycles, out_value_bytes

__all__ = ["PASS_BYTES", "PASS_FIELDS", "PASS_FORMAT", "TRACE_BYTES", "TRACE_FORMAT", "Pass",
           "ProgramError"]

#: The descriptor of one pass, in memory: the engine's layer registers, then where its
#: parameters, input and output are (little-endian; `PASS_BYTES` = 48 bytes, three 16-byte
#: words; reserved bytes are written 0 and ignored).
PASS_FIELDS: tuple[tuple[str, str], ...] = (
    *LAYER_FIELDS,
    ("in_pitch", "H"),      # bytes from one input pixel to the next (>= cin)
    ("out_pitch", "H"),     # bytes from one output pixel to the next (>= cout * vb)
    ("upsample", "B"),      # 1: each output pixel written 2x2 (nearest upsampling)
    ("reserved", "3x"),
    ("param_addr", "I"),
    ("param_len", "I"),
    ("in_addr", "I"),
    ("out_addr", "I"),
    ("reserved_end", "12x"),  # room for later fields; the descriptor is three 16-byte words
)
PASS_FORMAT = "<" + "".join(fmt for _, fmt in PASS_FIELDS)
PASS_BYTES = struct.calcsize(PASS_FORMAT)
#: The record the device writes after each pass k at trace address + k * TRACE_BYTES:
#: clock cycles of the whole pass (descriptor fetch to its last write), and the engine's
#: cycles of it (`LayerEngine.cycles`: parameters loaded to the last output).
TRACE_FORMAT = "<II8x"
TRACE_BYTES = struct.calcsize(TRACE_FORMAT)


class ProgramError(ValueError):
    """A pass or program the device cannot run as described."""


@dataclass(frozen=True)
class Pass:
    """One pass descriptor (field meanings: the module docstring and `PASS_FIELDS`)."""

    width: int
    height: int
    cin: int
    cout: int
    k3: int
    leaky: int
    head: int
    pool: int
    in_pitch: int
    out_pitch: int
    upsample: int
    param_addr: int
    param_len: int
    in_addr: int
    out_addr: int

    def encode(self) -> bytes:
        try:
            return struct.pack(PASS_FORMAT, *astuple(self))
        except struct.error as e:
            raise ProgramError(f"a pass field does not fit its descriptor: {e}") from e

    @classmethod
    def decode(cls, data: bytes) -> Pass:
        if len(data) != PASS_BYTES:
            raise ProgramError(f"a pass descriptor is {PASS_BYTES} bytes, got {len(data)}")
        return cls(*struct.unpack(PASS_FORMAT, data))

    @property
    def k(self) -> int:
        return 3 if self.k3 else 1

    def input_pairs(self, cfg: HwConfig) -> bool:
        """Whether the pass reader sends the input as two-value transfers (the engine then
        fills row 0 of a 3x3 map at two values a cycle): a dense input (``in_pitch ==
        cin``) at a multiple of `HwConfig.param_beat` >= 2, at least one beat long."""
        p = cfg.param_beat
        return (p >= 2 and self.in_pitch == self.cin and self.in_addr % p == 0
                and self.height * self.width * self.cin >= p)

    def cycles(self, cfg: HwConfig) -> int:
        """The pass's engine cycles by the no-stall schedule (`engine_cycles`), with the
        input as the pass reader sends it."""
        return engine_cycles(cfg, self.height, self.width, self.cin, self.cout, self.k,
                             self.pool, self.input_pairs(cfg))

    @property
    def out_shape(self) -> tuple[int, int]:
        """(OH, OW): the output map after the pool (before any upsampling)."""
        if self.pool == POOL_S2:
            return self.height // 2, self.width // 2
        return self.height, self.width

    def in_span(self) -> tuple[int, int]:
        """[first, end) byte range the pass reads as input."""
        n = self.height * self.width
        return self.in_addr, self.in_addr + (n - 1) * self.in_pitch + self.cin

    def out_span(self, cfg: HwConfig) -> tuple[int, int]:
        """[first, end) byte range the pass may write."""
        oh, ow = self.out_shape
        if self.upsample:
            oh, ow = 2 * oh, 2 * ow
        vb = out_value_bytes(cfg, bool(self.head))
        return self.out_addr, self.out_addr + (oh * ow - 1) * self.out_pitch + self.cout * vb

    def check(self, cfg: HwConfig) -> None:
        """ProgramError unless the pitches hold a pixel and every byte the pass touches lies
        inside the device memory (the engine's own limits: `engine.check_pass`)."""
        vb = out_value_bytes(cfg, bool(self.head))
        if self.in_pitch < self.cin or self.out_pitch < self.cout * vb:
            raise ProgramError(f"pitches ({self.in_pitch}, {self.out_pitch}) smaller than a "
                               f"pixel ({self.cin}, {self.cout * vb} bytes)")
        if self.upsample not in (0, 1):
            raise ProgramError(f"upsample must be 0 or 1, got {self.upsample}")
        oh, ow = self.out_shape
        if oh * ow == 0:
            raise ProgramError(f"a {self.height}x{self.width} pass has no output")
        spans = [self.in_span(), self.out_span(cfg),
                 (self.param_addr, self.param_addr + self.param_len)]
        for lo, hi in spans:
            if not 0 <= lo < hi <= cfg.mem_bytes:
                raise ProgramError(f"bytes {lo:#x}..{hi:#x} lie outside the device memory "
                                   f"({cfg.mem_bytes:#x} bytes)")
