"""ParamLoader (hw/engine/params.py): groups' parameter beats with random idle cycles, the
memories read back through the loader's read ports against where the contract puts
each byte (3x3, 1x1, the RGB layer's 27-product walk, cout and cin not multiples of the
array), `loaded` two
cycles after the last beat is taken, `overflow` for every beat without a place."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from hw.engine import ParamLoader, setup_layout
from hw.engine.layouts import weight_depth
from hw.spec.config import HwConfig
from hw.spec.engine import group_params, walk_vectors
from tests.hwbench import beats, fit, send, simulate, to_py
from tests.reference import ref_layer_decode

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
#: 3 x 6: words of 18 bytes, beats of 2 (`param_beat`), nine to a word.
CFG6 = HwConfig(array_rows=3, array_cols=6, max_width=16, max_in_channels=16,
                line_buffer_depth=64, weight_mem_bytes=1152)
R, C, P = CFG.array_rows, CFG.array_cols, CFG.param_beat

Group = tuple[np.ndarray, np.ndarray, np.ndarray]


def ref_weight_words(w: np.ndarray, cfg: HwConfig = CFG) -> dict[int, dict[int, int]]:
    """Where the OHWI weights of a group go: word -> {lane: value}. Product f of output
    channel o's flat walk (input channel-major: w[o, ky, kx, c] is f = c * k*k + ky * k
    + kx) goes to word (o // R) * nv + f // C, lane (o % R) * C + f % C; the lanes of the
    padding (products up to nv * C, rows up to a multiple of R) hold 0."""
    cout, k, _, cin = w.shape
    R, C = cfg.array_rows, cfg.array_cols
    walk, nv = k * k * cin, walk_vectors(cfg, k, cin)
    flat = w.transpose(0, 3, 1, 2).reshape(cout, walk)
    words: dict[int, dict[int, int]] = {}
    for o in range(-(-cout // R) * R):
        for f in range(nv * C):
            v = int(flat[o, f]) if f < walk and o < cout else 0
            words.setdefault((o // R) * nv + f // C, {})[(o % R) * C + f % C] = v
    return words


def _group(rng: np.random.Generator, k: int, cin: int, cout: int) -> Group:
    return (rng.integers(-128, 128, (cout, k, k, cin)), rng.integers(-2**31, 2**31, cout),
            rng.integers(0, 32, cout))


def _run(groups: list[tuple[int, int, int]], seed: int, idle: float,
         extra: int = 0, cfg: HwConfig = CFG) -> None:
    """Load each group (k, cin, cout) in turn (`extra` beats after each), check the
    memories after each."""
    dut = ParamLoader(cfg)
    p = cfg.param_beat
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    errors: list[str] = []
    overflows = [0]

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for k, cin, cout in groups:
            w, b, shift = _group(nrng, k, cin, cout)
            layer = {"width": 4, "height": 4, "cin": cin, "cout": cout, "k3": int(k == 3),
                     "leaky": 0, "head": 0, "pool": 0}
            ctx.set(dut.setup, fit(setup_layout(cfg), ref_layer_decode(cfg, layer)["setup"]))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            before = overflows[0]
            raw = beats(group_params(cfg, w, b, shift), p)
            raw += [rng.randrange(1 << 8 * p) for _ in range(extra)]
            await send(dut.params, raw[:-1], rng, idle)(ctx)
            if ctx.get(dut.loaded) and not extra:
                errors.append(f"group {k, cin, cout}: loaded before the last beat")
            await send(dut.params, raw[-1:], rng)(ctx)
            # The last beat's bytes before its last shift byte, then 2 cycles.
            tail = (5 * cout) % p or p
            for n in range(1, tail + 2):
                if ctx.get(dut.loaded) != (n == tail + 1 or extra > 0):
                    errors.append(f"group {k, cin, cout}: loaded={ctx.get(dut.loaded)} "
                                  f"{n} cycles after the last beat")
                await ctx.tick()
            if overflows[0] - before != extra:
                errors.append(f"group {k, cin, cout}: {overflows[0] - before} overflow "
                              f"pulses, expected {extra}")
            await _check_memories(ctx, dut, w, b, shift, errors, cfg)

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, pulse in ctx.tick().sample(dut.overflow):
            overflows[0] += pulse

    size = sum(cout * (k * k * cin + 5) + extra for k, cin, cout in groups) * 2
    simulate(dut, [bench], cycles=8 * size + 500 * len(groups), processes=[monitor])
    assert not errors, "\n".join(errors[:5])


async def _read(ctx, port, addr: int) -> object:  # type: ignore[no-untyped-def]
    ctx.set(port.addr, addr)
    ctx.set(port.en, 1)
    await ctx.tick()
    ctx.set(port.en, 0)
    return to_py(ctx.get(port.data))


async def _check_memories(ctx, dut, w: np.ndarray, b: np.ndarray,  # type: ignore[no-untyped-def]
                          shift: np.ndarray, errors: list[str], cfg: HwConfig = CFG) -> None:
    for addr, lanes in sorted(ref_weight_words(w, cfg).items()):
        word = await _read(ctx, dut.weights, addr)
        got = {lane: word[lane] for lane in lanes}
        if got != lanes:
            errors.append(f"weight word {addr}: expected {lanes}, actual {got}")
    lanes = cfg.out_lanes
    for ch in range(len(b)):
        a, n = divmod(ch, lanes)
        bias, sh = (await _read(ctx, dut.bias, a))[n], (await _read(ctx, dut.shift, a))[n]
        if (bias, sh) != (int(b[ch]), int(shift[ch])):
            errors.append(f"channel {ch}: expected bias {b[ch]} shift {shift[ch]}, actual "
                          f"{bias} {sh}")


@pytest.mark.parametrize(("groups", "seed", "idle"), [
    ([(3, 5, 6)], 1, 0.3),
    ([(1, 7, 9), (3, 3, 5)], 2, 0.0),          # 1x1, then the RGB walk over it
    ([(3, 16, 8)], 3, 0.5),                   # the weight memory exactly full
    ([(3, 3, 16), (1, 16, 16), (3, 1, 1)], 4, 0.2),
    ([(3, 2, 3)], 5, 0.7),
    ([(3, 7, 5), (1, 13, 3)], 8, 0.2),          # walks of 63 and 13: not multiples of C
])
def test_param_loader_matches_reference(groups: list[tuple[int, int, int]], seed: int,
                                        idle: float) -> None:
    _run(groups, seed, idle)


def test_param_loader_two_lanes() -> None:
    """Bias and shift words of two channels (`HwConfig.out_lanes`), odd and even cout."""
    cfg = dataclasses.replace(CFG, out_lanes=2)
    _run([(3, 5, 7), (1, 7, 16), (3, 3, 1)], 9, 0.3, cfg=cfg)


def test_param_loader_extra_bytes_overflow() -> None:
    _run([(1, 6, 4), (3, 2, 3)], 6, 0.3, extra=3)


@pytest.mark.parametrize(("groups", "seed", "idle"), [
    ([(3, 5, 6), (1, 7, 9)], 11, 0.3),
    ([(3, 3, 5), (3, 2, 3)], 12, 0.0),          # the RGB walk: 27 products in 5 words of 6
    ([(1, 16, 5), (3, 1, 1)], 13, 0.5),
    ([(3, 5, 9), (3, 16, 2)], 14, 0.2),         # 45 products in 8 words; 144 in 24
])
def test_param_loader_beats_of_two_bytes(groups: list[tuple[int, int, int]],
                                                    seed: int, idle: float) -> None:
    """A word of 3 x 6 bytes takes nine beats of 2 bytes (`param_beat`)."""
    assert CFG6.param_beat == 2
    _run(groups, seed, idle, cfg=CFG6)
    _run(groups[:1], seed + 100, idle, extra=2, cfg=CFG6)


def test_param_loader_weights_past_memory_overflow() -> None:
    """cout 12 of 3x3x16 needs 108 words of 72: the beats of the words past the memory
    overflow, one pulse each; the rest is stored."""
    dut = ParamLoader(CFG)
    rng = random.Random(7)
    w, b, shift = _group(np.random.default_rng(7), 3, 16, 12)
    layer = {"width": 4, "height": 4, "cin": 16, "cout": 12, "k3": 1, "leaky": 0, "head": 0,
             "pool": 0}
    overflows = [0]
    errors: list[str] = []
    words = ref_weight_words(w)
    past = sum(len(lanes) for addr, lanes in words.items() if addr >= weight_depth(CFG))

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.setup, fit(setup_layout(CFG), ref_layer_decode(CFG, layer)["setup"]))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await send(dut.params, beats(group_params(CFG, w, b, shift), P), rng, 0.1)(ctx)
        await ctx.tick().repeat(3)
        kept = w[:8]                     # the first two row blocks fill the memory
        await _check_memories(ctx, dut, kept, b, shift, errors)

    async def monitor(ctx) -> None:  # type: ignore[no-untyped-def]
        async for _, _, pulse in ctx.tick().sample(dut.overflow):
            overflows[0] += pulse

    simulate(dut, [bench], cycles=6000, processes=[monitor])
    assert not errors, "\n".join(errors[:5])
    assert overflows[0] == past // P == 4 * 9 * 16 // P
