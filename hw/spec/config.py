"""The one hardware configuration every part of the project reads.

`HwConfig` is frozen; every number the gateware, golden model, quantizer, bundle
writer, testbenches and driver need comes from its fields or from properties derived
from them. Two ids come from it:

- `config_id`, a stable 32-bit hash of all fields: the gateware exposes it and the driver
  refuses a device (simulator or bitstream) built for another config;
- `numerics_id`, a hash of the number formats alone (`Numerics`, the fields that change
  integer results): bundles record it, so one bundle runs on every build that computes
  the same integers (another array size, clock or baud rate).

Part of the contract layer (`hw.spec`): plain Python, no Amaranth, nothing else of ours.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "ConfigError", "HwConfig", "Numerics", "load_config"]

#: Bumped when the meaning of a field changes, so old ids never collide with new ones.
CONFIG_SCHEMA = 1

#: Fields added to `HwConfig` after schema 1, with the default that leaves them out of
#: `HwConfig.config_id`.
_LATER_FIELDS = {"out_lanes": 1, "reorder_lutram": 0}

#: Fields that are switches (0 or 1); every other field is a positive integer.
_FLAG_FIELDS = frozenset({"reorder_lutram"})


class ConfigError(ValueError):
    """A hardware config that cannot be built or loaded."""


def _hash_id(kind: int | str, fields: dict[str, int]) -> int:
    blob = json.dumps({"schema": kind, **fields}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Numerics:
    """The number formats: everything that changes the integers a network computes.

    Activations are `act_bits` signed, weights `weight_bits` signed and symmetric,
    accumulators `acc_bits` signed, biases bounded by `bias_limit`, requantization shifts
    are `shift_bits` unsigned. The detection heads (linear layers) leave the requantizer
    as `head_bits` signed integers (see docs/numerics.md).
    """

    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    shift_bits: int = 5
    head_bits: int = 16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _FLAG_FIELDS:
                if not isinstance(v, int) or isinstance(v, bool) or v not in (0, 1):
                    raise ConfigError(f"{type(self).__name__}.{f.name} must be 0 or 1, "
                                      f"got {v!r}")
            elif not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be a positive "
                                  f"integer, got {v!r}")
        if self.act_bits != 8 or self.weight_bits != 8:
            raise ConfigError("the hardware is int8: act_bits and weight_bits must be 8")
        if not self.act_bits <= self.head_bits <= self.acc_bits:
            raise ConfigError(
                f"head_bits must lie in [{self.act_bits}, {self.acc_bits}], got {self.head_bits}")
        if self.acc_bits < 24:
            raise ConfigError(f"acc_bits={self.acc_bits} is too narrow for any real layer")

    @property
    def numerics(self) -> Numerics:
        """The number formats alone (a `Numerics`, also of a `HwConfig`)."""
        return Numerics(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Numerics)})

    @property
    def numerics_id(self) -> int:
        """Stable 32-bit id of the number formats: equal ids compute equal integers."""
        return _hash_id(f"numerics-{CONFIG_SCHEMA}", self.numerics.to_dict())

    @property
    def numerics_id_hex(self) -> str:
        return f"{self.numerics_id:08x}"

    @property
    def act_min(self) -> int:
        return -(1 << (self.act_bits - 1))

    @property
    def act_max(self) -> int:
        return (1 << (self.act_bits - 1)) - 1

    @property
    def weight_max(self) -> int:
        """Weights are symmetric: [-weight_max, weight_max]."""
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def max_product(self) -> int:
        """Largest |x * w| of one MAC."""
        return -self.act_min * self.weight_max

    @property
    def bias_limit(self) -> int:
        """Biases are clamped to [-bias_limit, bias_limit]."""
        return 1 << (self.acc_bits - 2)

    @property
    def max_dot_terms(self) -> int:
        """Longest dot product (K = k*k*Cin) whose accumulator provably fits acc_bits.

        |sum| <= K * max_product and |bias| <= bias_limit, so
        K * max_product + bias_limit <= 2**(acc_bits-1) - 1 keeps acc in range.
        """
        return ((1 << (self.acc_bits - 1)) - 1 - self.bias_limit) // self.max_product

    @property
    def max_shift(self) -> int:
        return (1 << self.shift_bits) - 1

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Numerics:
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.__name__} must be a JSON object, got "
                              f"{type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class HwConfig(Numerics):
    """Hardware parameters of one accelerator build: the number formats (`Numerics`,
    inherited with their derived values) and the build's sizes, clock and link."""

    # MAC array: `array_rows` output channels x `array_cols` input channels per cycle.
    array_rows: int = 8
    array_cols: int = 8
    # MACs per multiplier: 1, or 2 = rows 2p and 2p + 1 share one multiplier per column
    # (two int8 products in one DSP48E1, hw/spec/dsppack.py; needs an even array_rows).
    mac_pack: int = 1
    # Output channels the serializer, requantizer and max pool take per cycle: 1, or 2
    # (channels 2j and 2j + 1 together; needs an even array_rows). The engine's output
    # stays one value a cycle, so 2 pays where a pool shrinks the output (docs/engine.md).
    out_lanes: int = 1
    # 1: the engine's reorder buffer in distributed (LUT) RAM, not block RAM (a wide
    # array's few words would fill block RAMs a fifth full; docs/gateware.md).
    reorder_lutram: int = 0
    # Feature-map limits: widest row, and the longest row in the line buffer (W * Cin).
    max_width: int = 416
    max_in_channels: int = 1024
    line_buffer_depth: int = 10240
    # On-chip weight memory for one output-channel group (int8 weights).
    weight_mem_bytes: int = 36864
    # Clock and host link.
    clock_hz: int = 100_000_000
    uart_baud: int = 12_000_000
    # The device memory (DRAM behind a LiteDRAM native port): its size in bytes and the
    # port's data width in bits (128: the Arty's DDR3 x16 at 4:1).
    mem_bytes: int = 1 << 28
    mem_data_bits: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mac_pack not in (1, 2):
            raise ConfigError(f"mac_pack must be 1 or 2, got {self.mac_pack!r}")
        if self.array_rows % self.mac_pack:
            raise ConfigError(f"mac_pack={self.mac_pack} needs array_rows to be a multiple "
                              f"of it, got {self.array_rows}")
        if self.out_lanes not in (1, 2):
            raise ConfigError(f"out_lanes must be 1 or 2, got {self.out_lanes!r}")
        if self.array_rows % self.out_lanes:
            raise ConfigError(f"out_lanes={self.out_lanes} needs array_rows to be a "
                              f"multiple of it, got {self.array_rows}")
        if self.line_buffer_depth < self.max_width:
            raise ConfigError("line_buffer_depth must hold at least one row of max_width pixels")
        if self.clock_hz < 2 * self.uart_baud:
            raise ConfigError("clock_hz must be at least twice uart_baud")
        if self.mem_data_bits < 32 or self.mem_data_bits & (self.mem_data_bits - 1):
            raise ConfigError(f"mem_data_bits must be a power of two >= 32, got "
                              f"{self.mem_data_bits}")
        if self.mem_bytes % self.mem_word_bytes or self.mem_bytes > 1 << 32:
            raise ConfigError(f"mem_bytes must be a multiple of the memory word "
                              f"({self.mem_word_bytes} bytes) and at most 4 GiB")

    # -- derived values ---------------------------------------------------------------
    @property
    def macs_per_cycle(self) -> int:
        return self.array_rows * self.array_cols

    @property
    def multipliers(self) -> int:
        """Multipliers of the MAC array (DSP48E1 on Artix-7): macs_per_cycle / mac_pack."""
        return self.macs_per_cycle // self.mac_pack

    @property
    def param_beat(self) -> int:
        """Bytes of one beat of the engine's parameter port: the largest power of two that
        divides a weight word's R x C bytes, at most a memory word (16 for the default 8x8
        array)."""
        rc = self.array_rows * self.array_cols
        return min(rc & -rc, self.mem_word_bytes)

    @property
    def weight_lane_bytes(self) -> int:
        """Bytes of a weight word the engine writes at once (the weight memory's write
        granularity; its beats wait in a staging register until then): the most
        parameter beats, at most 128 bytes, that divide the word's R x C bytes. Block RAMs
        then hold whole lanes of up to 1,024 bits (A7-100T 16x28: 4 lanes of 896 bits, 25
        RAMB36 each at 1,024 words, against 28 lanes of 128 bits, 4 each)."""
        beats = self.array_rows * self.array_cols // self.param_beat
        g = max(d for d in range(1, beats + 1) if beats % d == 0 and d * self.param_beat <= 128)
        return g * self.param_beat

    @property
    def mem_word_bytes(self) -> int:
        """Bytes of one memory word (one transfer on the memory port)."""
        return self.mem_data_bits // 8

    @property
    def mem_words(self) -> int:
        """Words of the device memory (the memory port's address range)."""
        return self.mem_bytes // self.mem_word_bytes

    @property
    def uart_divisor(self) -> int:
        return round(self.clock_hz / self.uart_baud)

    @property
    def config_id(self) -> int:
        """Stable 32-bit id of this config (hash of schema version and fields; a field
        added after the schema, at its default, is left out, so older configs keep their
        ids)."""
        fields = self.to_dict()
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        return _hash_id(CONFIG_SCHEMA, fields)

    @property
    def config_id_hex(self) -> str:
        return f"{self.config_id:08x}"

    # -- (de)serialisation ------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> HwConfig:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise ConfigError(f"{path}: cannot read HwConfig: {e.strerror}") from e
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from e
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


#: The default build (fits the Arty A7-35T).
DEFAULT = HwConfig()


def load_config(path: str | Path | None) -> HwConfig:
    """The config at `path`, or the default one when `path` is None."""
    return DEFAULT if path is None else HwConfig.load(path)
