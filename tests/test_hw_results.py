"""ResultIntake and Serializer (hw/engine/results.py) against small references: array
results in with random idle cycles, out with random backpressure; column-pooled passes
with odd and even widths; `last` exactly with each pass's last result; the serializer's
channels with their bias and shift from block-RAM models."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import pytest

from hw.engine import ResultIntake, Serializer, setup_layout
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2
from tests.hwbench import compare, fit, read_port_model, receive, send, simulate
from tests.reference import ref_layer_decode

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
R = CFG.array_rows

Pass = tuple[int, int, int, int]          # H W cout pool


def _layer(h: int, w: int, cout: int, pool: int, **more: int) -> dict[str, int]:
    return {"width": w, "height": h, "cin": 4, "cout": cout, "k3": 1, "leaky": 0, "head": 0,
            "pool": pool} | more


def _acc(rng: random.Random) -> list[int]:
    return [rng.randrange(-2**31, 2**31) for _ in range(R)]


def ref_intake(results: list[list[list[list[int]]]], hpool: bool) -> list[dict[str, object]]:
    """What goes on to the serializer for results[y][x][rb]: each as is, or (column-pooled)
    each odd column's with the even column's before it as partner (an odd last column
    dropped). A partner that is not used is not compared."""
    out: list[dict[str, object]] = []
    for row in results:
        for x, pixel in enumerate(row):
            for rb, acc in enumerate(pixel):
                if not hpool:
                    out.append({"acc": acc, "pair": 0})
                elif x % 2:
                    out.append({"acc": acc, "partner": row[x - 1][rb], "pair": 1})
    return out


def _run_intake(passes: list[Pass], seed: int, idle: float, stall: float,
                cfg: HwConfig = CFG) -> list[int]:
    """Runs the passes; returns the cycles in which `i` took a result."""
    dut = ResultIntake(cfg)
    rng = random.Random(seed)
    data = [[[[_acc(rng) for _ in range(math.ceil(cout / R))] for _ in range(w)]
             for _ in range(h)] for h, w, cout, _ in passes]
    want: list[dict[str, object]] = []
    lasts: list[int] = []                  # index of each pass's last result
    for (_, w, cout, pool), res in zip(passes, data, strict=True):
        hpool = ref_layer_decode(cfg, _layer(1, w, cout, pool))["setup"]["hpool"]
        want += ref_intake(res, bool(hpool))
        lasts.append(sum(len(px) for row in res for px in row) + (lasts[-1] + 1 if lasts
                                                                   else 0) - 1)
    got: list[dict[str, object]] = []
    seen: list[int] = []
    takes: list[int] = []

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        for (h, w, cout, pool), res in zip(passes, data, strict=True):
            layer = _layer(h, w, cout, pool)
            ctx.set(dut.layer, layer)
            ctx.set(dut.setup, fit(setup_layout(cfg), ref_layer_decode(cfg, layer)["setup"]))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick()
            await send(dut.i, [px for row in res for pixel in row for px in pixel], rng,
                       idle)(ctx)

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        taken = cycle = 0
        async for _, _, valid, ready, last in ctx.tick().sample(dut.i.valid, dut.i.ready,
                                                                dut.last):
            if last:
                seen.append(taken)
            taken += valid & ready
            if valid & ready:
                takes.append(cycle)
            cycle += 1

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall)],
             cycles=8 * len(want) + 100 * len(passes) + 200, processes=[monitor])
    got = [{k: v for k, v in g.items() if k in w} for g, w in zip(got, want, strict=False)]
    compare("intake", want, got)
    assert seen == lasts, f"last with results {seen}, expected {lasts}"
    return takes


@pytest.mark.parametrize(("passes", "seed", "idle", "stall"), [
    ([(3, 4, 6, POOL_NONE), (2, 5, 4, POOL_S1)], 1, 0.3, 0.3),
    ([(3, 4, 8, POOL_S2), (2, 5, 5, POOL_S2)], 2, 0.2, 0.5),     # column-pooled, odd W
    ([(2, 3, 16, POOL_S2), (3, 1, 3, POOL_S2)], 3, 0.5, 0.2),    # too many rows; W = 1
    ([(4, 6, 1, POOL_S2), (1, 2, 9, POOL_NONE)], 4, 0.0, 0.0),
])
def test_intake_matches_reference(passes: list[Pass], seed: int, idle: float,
                                  stall: float) -> None:
    _run_intake(passes, seed, idle, stall)


def test_intake_two_lanes_takes_a_result_every_cycle() -> None:
    """With `HwConfig.out_lanes` = 2 (`o` into a `StreamRegister` in the engine) the intake
    takes a result every cycle while `o` is taken at once; with 1, every other cycle."""
    passes = [(2, 4, 4, POOL_NONE)]
    for cfg, gap in ((CFG, 2), (CFG2, 1)):
        takes = _run_intake(passes, 5, 0.0, 0.0, cfg)
        assert {b - a for a, b in itertools.pairwise(takes)} == {gap}, (cfg.out_lanes, takes)
    _run_intake([(3, 4, 8, POOL_S2), (2, 5, 5, POOL_NONE)], 6, 0.3, 0.4, CFG2)


#: The serializer also with two output channels a transfer (`HwConfig.out_lanes`).
CFG2 = dataclasses.replace(CFG, out_lanes=2)


def ref_serializer(results: list[dict[str, object]], cout: int, bias: list[int],
                   shift: list[int], leaky: int, head: int,
                   lanes: int = 1) -> list[list[dict[str, int]]]:
    """Requantizer inputs in transfers of `lanes`: result j (row block j % nrb of its
    pixel) gives its channels r0 .. min(r0 + R, cout) - 1, the max with the partner for
    a pair; a transfer's elements past cout are not compared (None)."""
    nrb = math.ceil(cout / R)
    out: list[list[dict[str, int] | None]] = []
    for j, res in enumerate(results):
        r0 = j % nrb * R
        for c0 in range(r0, min(r0 + R, cout), lanes):
            out.append([])
            for ch in range(c0, c0 + lanes):
                n = ch - r0
                acc = max(res["acc"][n], res["partner"][n]) if res["pair"] else res["acc"][n]
                out[-1].append(None if ch >= cout else {
                    "acc": acc, "bias": bias[ch], "shift": shift[ch], "leaky": leaky,
                    "head": head})
    return out


@pytest.mark.parametrize("cfg", [CFG, CFG2], ids=["lanes1", "lanes2"])
@pytest.mark.parametrize(("cout", "leaky", "head", "seed", "idle", "stall"), [
    (6, 1, 0, 1, 0.3, 0.3), (16, 0, 1, 2, 0.0, 0.5), (1, 1, 0, 3, 0.5, 0.0),
    (4, 0, 0, 4, 0.2, 0.7), (9, 1, 0, 5, 0.0, 0.0), (7, 0, 0, 6, 0.3, 0.3),
])
def test_serializer_matches_reference(cfg: HwConfig, cout: int, leaky: int, head: int,
                                      seed: int, idle: float, stall: float) -> None:
    dut = Serializer(cfg)
    lanes = cfg.out_lanes
    rng = random.Random(seed)
    bias = [rng.randrange(-2**31, 2**31) for _ in range(16)]
    shift = [rng.randrange(32) for _ in range(16)]
    results = [{"acc": _acc(rng), "partner": _acc(rng), "pair": rng.randrange(2)}
               for _ in range(4 * math.ceil(cout / R))]
    want = ref_serializer(results, cout, bias, shift, leaky, head, lanes)
    got: list[list[dict[str, int]]] = []
    layer = _layer(4, 4, cout, POOL_NONE, leaky=leaky, head=head)

    async def source(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, layer)
        ctx.set(dut.setup, fit(setup_layout(cfg), ref_layer_decode(cfg, layer)["setup"]))
        await ctx.tick()
        await send(dut.i, results, rng, idle)(ctx)

    def words(values: list[int]):  # type: ignore[no-untyped-def]
        return lambda a: [values[a * lanes + n] for n in range(lanes)]

    simulate(dut, [source, receive(dut.o, len(want), got, rng, stall)],
             cycles=6 * len(want) * lanes + 100,
             processes=[read_port_model(dut.bias, words(bias)),
                        read_port_model(dut.shift, words(shift))])
    got = [[g if w is not None else None for w, g in zip(wt, gt, strict=True)]
           for wt, gt in zip(want, got, strict=False)] + got[len(want):]
    compare(f"serializer cout={cout} lanes={lanes}", want, got)
