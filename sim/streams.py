"""cocotb side of the block tests: payload packing and a valid/ready stream loop.

`run_streams` drives every source and sink of a top-level in one coroutine, one
iteration per clock cycle: it sets inputs after the rising edge, samples the settled
handshake in the ReadOnly phase, and so sees exactly the transfers that happen at the next
edge. Sources insert random idle cycles before presenting an item (valid never drops
before ready), sinks drop ready at random.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

import cocotb
import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hw.spec.config import DEFAULT, HwConfig

__all__ = [
    "FRAME_CONFIGS",
    "Sink",
    "Source",
    "compare",
    "config",
    "frame_data",
    "pack",
    "params",
    "run_streams",
    "start",
    "unpack",
]


#: Configs the feature-map blocks (maxpool, window generator) are swept over: the default
#: build, and a small one whose limits (width, channels, line buffer) the tests reach.
FRAME_CONFIGS = {
    "default": DEFAULT,
    "small": HwConfig(array_rows=4, array_cols=4, max_width=32, max_in_channels=64,
                      line_buffer_depth=256),
}


def frame_data(rng: np.random.Generator, h: int, w: int, c: int, kind: str) -> np.ndarray:
    """An H x W x C int8 test map: "min", "max", "ramp" (strictly monotonic along every
    axis, so a window's max is always a corner) or uniform random ("rand")."""
    if kind == "min":
        return np.full((h, w, c), -128, dtype=np.int64)
    if kind == "max":
        return np.full((h, w, c), 127, dtype=np.int64)
    if kind == "ramp":
        y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
        return (y * 17 - x * 9 + ch * 5 - 60).clip(-128, 127)
    return rng.integers(-128, 128, size=(h, w, c))


def config() -> HwConfig:
    """The HwConfig the pytest side built this simulator for."""
    return HwConfig.from_dict(json.loads(os.environ["HWCFG"]))


def params() -> dict[str, Any]:
    """The test parameters the pytest side passed (JSON)."""
    return json.loads(os.environ.get("TEST_PARAMS", "{}"))


def pack(shape: Any, value: Any) -> int:
    """A Python value (int, dict for structs, list for arrays) as the raw bits of `shape`."""
    if isinstance(shape, (data.StructLayout, data.ArrayLayout)):
        raw = 0
        for key, fld in shape:
            raw |= pack(fld.shape, value[key]) << fld.offset
        return raw
    width = Shape.cast(shape).width
    return int(value) & ((1 << width) - 1)


def unpack(shape: Any, raw: int) -> Any:
    """Raw bits of `shape` as a Python value (signed fields sign-extended)."""
    if isinstance(shape, data.StructLayout):
        return {k: unpack(f.shape, raw >> f.offset) for k, f in shape}
    if isinstance(shape, data.ArrayLayout):
        return [unpack(f.shape, raw >> f.offset) for _, f in shape]
    s = Shape.cast(shape)
    raw &= (1 << s.width) - 1
    if s.signed and raw >> (s.width - 1):
        raw -= 1 << s.width
    return raw


@dataclass
class Source:
    """Items (raw ints) to send on the stream port `prefix` (e.g. "i")."""
    prefix: str
    items: list[int]
    idle: float = 0.0          # probability of an idle cycle before each item
    sent: int = 0
    _shown: bool = False


@dataclass
class Sink:
    """Collects `count` raw payloads from the stream port `prefix` (e.g. "o")."""
    prefix: str
    count: int
    stall: float = 0.0         # probability that ready is low in a cycle
    got: list[int] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)   # cycle of each transfer


async def start(dut: Any) -> None:
    """Start the clock and apply a synchronous reset for two cycles."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def run_streams(dut: Any, sources: list[Source], sinks: list[Sink], rng: random.Random,
                      max_cycles: int, drain: int = 16) -> int:
    """Run until every source is sent and every sink has its count; return the cycles used.

    Afterwards `drain` more cycles run with ready high, and any extra transfer on a sink
    fails the test (a block must not emit more than its contract says).
    """
    ports = {s.prefix: (getattr(dut, f"{s.prefix}__valid"), getattr(dut, f"{s.prefix}__ready"),
                        getattr(dut, f"{s.prefix}__payload")) for s in sources}
    outs = {k.prefix: (getattr(dut, f"{k.prefix}__valid"), getattr(dut, f"{k.prefix}__ready"),
                       getattr(dut, f"{k.prefix}__payload")) for k in sinks}
    for valid, _, _ in ports.values():
        valid.value = 0
    cycle = 0

    def busy() -> bool:
        return (any(s.sent < len(s.items) for s in sources)
                or any(len(k.got) < k.count for k in sinks))

    extra = 0
    while busy() or extra < drain:
        if not busy():
            extra += 1
        await RisingEdge(dut.clk)
        cycle += 1
        if cycle > max_cycles:
            raise AssertionError(
                f"timeout after {max_cycles} cycles: sent "
                f"{[(s.prefix, s.sent, len(s.items)) for s in sources]}, received "
                f"{[(k.prefix, len(k.got), k.count) for k in sinks]}")
        for s in sources:
            valid, _, payload = ports[s.prefix]
            if not s._shown:
                if s.sent < len(s.items) and rng.random() >= s.idle:
                    payload.value = s.items[s.sent]
                    valid.value = 1
                    s._shown = True
                else:
                    valid.value = 0
        for k in sinks:
            outs[k.prefix][1].value = 1 if not busy() or rng.random() >= k.stall else 0
        await ReadOnly()
        for s in sources:
            valid, ready, _ = ports[s.prefix]
            if s._shown and int(ready.value):
                s.sent += 1
                s._shown = False
        for k in sinks:
            valid, ready, payload = outs[k.prefix]
            if int(valid.value) and int(ready.value):
                if len(k.got) >= k.count:
                    raise AssertionError(
                        f"{k.prefix}: unexpected transfer #{len(k.got)} (expected {k.count})")
                k.got.append(int(payload.value))
                k.cycles.append(cycle)
    await RisingEdge(dut.clk)
    for valid, _, _ in ports.values():
        valid.value = 0
    return cycle


def compare(what: str, expected: list[Any], actual: list[Any]) -> None:
    """Fail with the first differing index and both values, or on a length mismatch."""
    for idx, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if e != a:
            raise AssertionError(
                f"{what}: first mismatch at index {idx}: expected {e!r}, actual {a!r} "
                f"({sum(x != y for x, y in zip(expected, actual, strict=False))} of "
                f"{min(len(expected), len(actual))} differ)")
    if len(expected) != len(actual):
        raise AssertionError(f"{what}: expected {len(expected)} items, got {len(actual)}")
