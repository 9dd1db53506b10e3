"""RecordMask (hw/mask.py) against `hw.spec.protocol.record_mask`: corner cases of the key's
place, the threshold and the record count, seeded random runs, with input idles and output
backpressure, and two runs back to back."""

from __future__ import annotations

import random

import pytest

from hw.mask import RecordMask
from hw.spec.protocol import record_mask
from tests.hwbench import compare, receive, send, simulate


def _records(rng: random.Random, n: int, size: int, key: int, keys: list[int]) -> bytes:
    out = bytearray(rng.randbytes(n * size))
    for k, v in enumerate(keys):
        out[k * size + key:k * size + key + 2] = v.to_bytes(2, "little", signed=True)
    return bytes(out)


def _run(runs: list[tuple[bytes, int, int, int]], seed: int, idle: float,
         stall: float) -> None:
    """Each run: (records' bytes, record bytes, key offset, threshold), on one RecordMask
    one after the other; the source and the sink are separate testbenches."""
    dut = RecordMask()
    rng = random.Random(seed)
    got: list[list[int]] = [[] for _ in runs]
    ended: list[int] = []

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        for k, (data, size, key, thr) in enumerate(runs):
            while len(ended) < k:                     # the previous run has finished
                await ctx.tick()
            ctx.set(dut.records, len(data) // size)
            ctx.set(dut.record_bytes, size)
            ctx.set(dut.key_offset, key)
            ctx.set(dut.threshold, thr)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await send(dut.i, data, rng, idle)(ctx)

    async def sink(ctx) -> None:  # type: ignore[no-untyped-def]
        for k, (data, size, _, _) in enumerate(runs):
            while len(ended) < k:
                await ctx.tick()
            await ctx.tick()
            await receive(dut.o, (len(data) // size + 7) // 8, got[k], rng, stall)(ctx)
            for _ in range(3):
                assert not ctx.get(dut.i.ready), f"run {k}: input taken after its records"
                await ctx.tick()
            assert not ctx.get(dut.busy), f"run {k}: busy after its last mask byte"
            ended.append(k)

    simulate(dut, [source, sink], 200_000)
    for k, (data, size, key, thr) in enumerate(runs):
        compare(f"run {k} mask", list(record_mask(data, size, key, thr)), got[k])


@pytest.mark.parametrize(("n", "size", "key", "keys", "thr"), [
    (1, 2, 0, [5], 4),                          # one record, the key is the record
    (1, 2, 0, [4], 4),                          # equal: not over
    (8, 3, 1, [-32768, 32767] * 4, -32768),     # extremes; the key in the middle
    (9, 4, 2, [100] * 9, 99),                   # the key in the last two bytes; 2 bytes out
    (16, 170, 8, list(range(-8, 8)), 0),        # a YOLO candidate: objectness at byte 8
    (17, 5, 0, [32767] * 17, 32767),            # nothing over the largest threshold
])
def test_corner_cases(n, size, key, keys, thr):
    rng = random.Random(n)
    _run([(_records(rng, n, size, key, keys), size, key, thr)], seed=n, idle=0.3, stall=0.3)


@pytest.mark.parametrize(("seed", "idle", "stall"), [(1, 0.0, 0.0), (2, 0.4, 0.0),
                                                      (3, 0.0, 0.6), (4, 0.3, 0.3)])
def test_random_runs_with_stalls(seed, idle, stall):
    rng = random.Random(seed)
    runs = []
    for _ in range(3):
        size = rng.randint(2, 24)
        key = rng.randint(0, size - 2)
        n = rng.randint(1, 40)
        keys = [rng.randint(-32768, 32767) for _ in range(n)]
        runs.append((_records(rng, n, size, key, keys), size, key,
                     rng.choice([rng.randint(-32768, 32767), keys[0], -32768, 32767])))
    _run(runs, seed, idle, stall)
