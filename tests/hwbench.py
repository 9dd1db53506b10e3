"""Helpers of the Amaranth-simulator block tests (tests/test_hw_*.py): stream sources with
random idle cycles, sinks with random backpressure, a read-port model, and a runner that
fails instead of hanging when a testbench does not finish.

Each helper is a coroutine run in its own testbench (`simulate` runs them side by side),
so a block's inputs and outputs move independently, as in the device.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.sim import Simulator

__all__ = ["compare", "fit", "read_port_model", "receive", "send", "simulate", "to_py"]

Bench = Callable[[Any], Awaitable[None]]


def simulate(dut: Any, benches: Sequence[Bench], cycles: int,
             processes: Sequence[Bench] = ()) -> None:
    """Run `benches` (testbenches) and `processes` (models that run forever) on `dut`
    until the testbenches finish; fail if they have not finished after `cycles` cycles."""
    async def watchdog(ctx: Any) -> None:
        for _ in range(cycles):
            await ctx.tick()
        raise AssertionError(f"testbenches not finished after {cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    for proc in (*processes, watchdog):
        sim.add_process(proc)
    sim.run()


def to_py(value: Any) -> Any:
    """A sampled value as plain Python: ints (enum members as their values), dicts for
    structs, lists for arrays."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_py(value[n]) for n in range(layout.length)]
        return {name: to_py(value[name]) for name, _ in layout}
    if isinstance(value, enum.Enum):
        return value.value
    return int(value)


def fit(layout: data.StructLayout, values: dict[str, int]) -> dict[str, int]:
    """`values` (ints, one per field of `layout`) cut to their fields' widths, as the
    hardware's registers hold them (e.g. a last index of -1 is all ones)."""
    return {name: values[name] & ((1 << Shape.cast(fld.shape).width) - 1)
            for name, fld in layout}


def send(port: Any, items: Iterable[Any], rng: random.Random, idle: float = 0.0) -> Bench:
    """A testbench driving the stream `port`: each item after random idle cycles (with
    probability `idle` each), `valid` held until the item is taken."""
    async def bench(ctx: Any) -> None:
        for item in items:
            while rng.random() < idle:
                await ctx.tick()
            ctx.set(port.valid, 1)
            ctx.set(port.payload, item)
            await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
    return bench


def receive(port: Any, count: int, got: list[Any], rng: random.Random,
            stall: float = 0.0, times: list[int] | None = None) -> Bench:
    """A testbench taking `count` transfers from the stream `port` into `got` (and the
    cycle of each into `times`), `ready` low with probability `stall` each cycle."""
    async def bench(ctx: Any) -> None:
        cycle = 0
        while len(got) < count:
            ready = rng.random() >= stall
            ctx.set(port.ready, int(ready))
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            cycle += 1
            if ready and valid:
                got.append(to_py(payload))
                if times is not None:
                    times.append(cycle)
        ctx.set(port.ready, 0)
    return bench


def read_port_model(port: Any, word: Callable[[int], Any]) -> Bench:
    """A process answering the read port `port` (``addr``, ``en``, ``data``) like a block
    RAM: ``data`` is ``word(addr)`` of the last edge with ``en`` set."""
    async def process(ctx: Any) -> None:
        async for _, _, addr, en in ctx.tick().sample(port.addr, port.en):
            if en:
                ctx.set(port.data, word(addr))
    return process


def compare(what: str, expected: Sequence[Any], actual: Sequence[Any]) -> None:
    """Fail with the first differing index and both values, or on a length mismatch."""
    for n, (e, a) in enumerate(zip(expected, actual, strict=False)):
        assert e == a, f"{what}: item {n}: expected {e!r}, actual {a!r}"
    assert len(expected) == len(actual), (
        f"{what}: expected {len(expected)} items, got {len(actual)}")



def beats(raw: bytes, n: int) -> list[int]:
    """`raw` as beats of `n` bytes (first byte lowest), a short last beat zero-padded."""
    raw = bytes(raw) + bytes(-len(raw) % n)
    return [int.from_bytes(raw[k:k + n], "little") for k in range(0, len(raw), n)]
