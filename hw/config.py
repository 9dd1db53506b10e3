"""The one hardware configuration every part of the project reads.

`HwConfig` is frozen; every number the gateware, golden model, quantizer, bundle
writer, testbenches and driver need comes from its fields or from properties derived
from them. `config_id` is a stable 32-bit hash of the fields: the gateware exposes it,
bundles record it, and the driver refuses a bundle or a device whose id differs.

Pure Python on purpose (no Amaranth import), so the software side can read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "ConfigError", "HwConfig", "load_config"]

#: Bumped when the meaning of a field changes, so old ids never collide with new ones.
CONFIG_SCHEMA = 1


class ConfigError(ValueError):
    """A hardware config that cannot be built or loaded."""


@dataclass(frozen=True)
class HwConfig:
    """Hardware parameters of one accelerator build.

    Numerics (see docs/numerics.md): activations are `act_bits` signed, weights
    `weight_bits` signed and symmetric, accumulators `acc_bits` signed, biases bounded
    by `bias_limit`, requantization shifts are `shift_bits` unsigned. The detection
    heads (linear layers) leave the requantizer as `head_bits` signed integers.
    """

    # MAC array: `array_rows` output channels x `array_cols` input channels per cycle.
    array_rows: int = 8
    array_cols: int = 8
    # Feature-map limits: widest row, and the longest row in the line buffer (W * Cin).
    max_width: int = 416
    max_in_channels: int = 1024
    line_buffer_depth: int = 10240
    # On-chip weight memory for one output-channel group (int8 weights).
    weight_mem_bytes: int = 36864
    # Number formats.
    act_bits: int = 8
    weight_bits: int = 8
    acc_bits: int = 32
    shift_bits: int = 5
    head_bits: int = 16
    # Clock and host link.
    clock_hz: int = 100_000_000
    uart_baud: int = 12_000_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"HwConfig.{f.name} must be a positive integer, got {v!r}")
        if self.act_bits != 8 or self.weight_bits != 8:
            raise ConfigError("the hardware is int8: act_bits and weight_bits must be 8")
        if not self.act_bits <= self.head_bits <= self.acc_bits:
            raise ConfigError(
                f"head_bits must lie in [{self.act_bits}, {self.acc_bits}], got {self.head_bits}")
        if self.acc_bits < 24:
            raise ConfigError(f"acc_bits={self.acc_bits} is too narrow for any real layer")
        if self.line_buffer_depth < self.max_width:
            raise ConfigError("line_buffer_depth must hold at least one row of max_width pixels")
        if self.clock_hz < 2 * self.uart_baud:
            raise ConfigError("clock_hz must be at least twice uart_baud")

    # -- derived values ---------------------------------------------------------------
    @property
    def macs_per_cycle(self) -> int:
        return self.array_rows * self.array_cols

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

    @property
    def line_buffer_bytes(self) -> int:
        """Three rows of W * Cin int8 for a 3x3 window."""
        return 3 * self.line_buffer_depth

    @property
    def uart_divisor(self) -> int:
        return round(self.clock_hz / self.uart_baud)

    @property
    def config_id(self) -> int:
        """Stable 32-bit id of this config (hash of schema version and fields)."""
        blob = json.dumps({"schema": CONFIG_SCHEMA, **self.to_dict()}, sort_keys=True)
        return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:4], "big")

    @property
    def config_id_hex(self) -> str:
        return f"{self.config_id:08x}"

    # -- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HwConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a HwConfig must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown HwConfig field(s): {', '.join(unknown)}")
        return cls(**data)

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
