"""Quick Amaranth-simulator check of hw.engine.LayerEngine against ref_engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.engine import LayerEngine
from hw.spec.config import HwConfig
from hw.spec.engine import group_params, group_size, param_bytes
from tests.hwbench import beats
from tests.reference import ref_engine

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
#: The same with two MACs per multiplier (row pairs share packed DSP48E1 multipliers).
CFG_PACKED = dataclasses.replace(CFG, mac_pack=2)
#: C = 6 divides none of 3, 4 and 5 channels: the flat walk's vectors cross channels and
#: taps (45 products of a 3x3x5 pixel in 8 vectors); parameter beats of 2 bytes.
CFG_C6 = dataclasses.replace(CFG, array_cols=6)


def param_stream(w: np.ndarray, b: np.ndarray, shift: np.ndarray,
                 cfg: HwConfig = CFG) -> list[int]:
    """The group's parameter block as the engine's beats."""
    return beats(group_params(cfg, w, b, shift), cfg.param_beat)


def _run(x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: np.ndarray, leaky: bool,
         head: bool, pool: int, extra: int = 0,
         stall: float = 0.0, cfg: HwConfig = CFG) -> tuple[list[int], int, int]:
    dut = LayerEngine(cfg)
    h, wd, cin = x.shape
    cout, k = w.shape[:2]
    want = ref_engine(x, w, b, shift, leaky=leaky, head=head, pool=pool, cfg=cfg).size
    got: list[int] = []
    status: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, {"width": wd, "height": h, "cin": cin, "cout": cout,
                            "k3": int(k == 3), "leaky": int(leaky), "head": int(head),
                            "pool": pool})
        await ctx.tick().repeat(2)        # `shape_ok` judges the registers
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        prm = param_stream(w, b, shift, cfg) + [0] * extra
        assert len(prm) * cfg.param_beat == param_bytes(cfg, k, cin, cout) + extra * cfg.param_beat
        rng = np.random.default_rng(x.size)
        # The input as transfers of one value, or of two (about half of them).
        vals = [int(v) for v in x.reshape(-1)]
        pixels: list[list[int]] = []
        while vals:
            n = 2 if len(vals) > 1 and rng.random() < 0.5 else 1
            pixels.append(vals[:n])
            vals = vals[n:]
        drain = 20
        for _ in range(60_000):
            ctx.set(dut.o.ready, int(rng.random() >= stall))
            show = rng.random() >= stall
            ctx.set(dut.params.valid, int(bool(prm) and show))
            if prm:
                ctx.set(dut.params.payload, prm[0])
            ctx.set(dut.i.valid, int(bool(pixels) and show))
            if pixels:
                t = pixels[0]
                ctx.set(dut.i.payload, {"data": [t[0], t[-1]], "two": len(t) == 2})
            _, _, p_rdy, i_rdy, valid, ready, payload, done = await ctx.tick().sample(
                dut.params.ready, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload,
                dut.done)
            if prm and p_rdy and show:
                prm.pop(0)
            if pixels and i_rdy and show:
                pixels.pop(0)
            if valid and ready:
                got.append(payload)
            if done:
                drain -= 1
                if not drain:
                    break
        status.extend([ctx.get(dut.param_err), ctx.get(dut.cycles)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == want
    return got, status[0], status[1]


@pytest.mark.parametrize(("h", "w", "cin", "cout", "k", "leaky", "head", "pool"), [
    (3, 4, 3, 5, 3, True, False, 0),
    (4, 4, 6, 4, 3, False, True, 0),
    (4, 5, 2, 3, 1, True, False, 1),
    (3, 3, 5, 6, 3, True, False, 2),
    (5, 7, 3, 6, 3, True, False, 2),
    # the RGB layer's 27-product walk and column-pooled (pool 1, cout <= HPOOL_BLOCKS * R)
    (4, 6, 3, 8, 3, True, False, 1),
    (5, 7, 3, 5, 3, True, False, 1),
    (4, 5, 3, 12, 3, False, False, 1),
    (3, 4, 2, 3, 3, True, False, 1),
    (3, 3, 3, 4, 3, True, True, 0),
    (2, 2, 3, 7, 3, False, False, 1),
    (3, 1, 3, 4, 3, True, False, 1),
])
def test_engine_matches_reference(h: int, w: int, cin: int, cout: int, k: int, leaky: bool,
                                  head: bool, pool: int) -> None:
    assert cout <= group_size(CFG, k, cin)
    _check_random_pass(h, w, cin, cout, k, leaky, head, pool, CFG, 0)


@pytest.mark.parametrize(("h", "w", "cin", "cout", "k", "leaky", "head", "pool"), [
    (3, 4, 5, 5, 3, True, False, 0),
    (4, 5, 3, 8, 3, True, False, 1),
    (3, 3, 4, 6, 3, False, True, 0),
    (4, 4, 7, 3, 1, True, False, 2),
    (3, 4, 13, 4, 3, True, False, 0),         # 117 products: 20 vectors, 3 words
])
def test_engine_with_c_not_dividing_cin(h: int, w: int, cin: int, cout: int, k: int,
                                        leaky: bool, head: bool, pool: int) -> None:
    """An array 6 lanes wide: every walk ends in a part-filled vector (flat walk)."""
    assert cout <= group_size(CFG_C6, k, cin)
    _check_random_pass(h, w, cin, cout, k, leaky, head, pool, CFG_C6, 2)


def _check_random_pass(h: int, w: int, cin: int, cout: int, k: int, leaky: bool, head: bool,
                       pool: int, cfg: HwConfig, seed: int) -> None:
    """A seeded random pass with stalls through the engine on `cfg`: exact, no error."""
    rng = np.random.default_rng(h * 100 + cin * 10 + cout + seed)
    x = rng.integers(-128, 128, (h, w, cin))
    wt = rng.integers(-127, 128, (cout, k, k, cin))
    b = rng.integers(-3000, 3000, cout)
    shift = rng.integers(4, 10, cout)
    got, err, cycles = _run(x, wt, b, shift, leaky, head, pool, stall=0.3, cfg=cfg)
    want = ref_engine(x, wt, b, shift, leaky=leaky, head=head, pool=pool, cfg=cfg)
    assert got == want.reshape(-1).tolist()
    assert err == 0 and cycles > 0


@pytest.mark.parametrize(("h", "w", "cin", "cout", "k", "leaky", "head", "pool"), [
    (3, 4, 3, 5, 3, True, False, 0),
    (4, 5, 2, 3, 1, True, False, 1),
    (4, 6, 3, 8, 3, True, False, 1),
    (3, 3, 5, 6, 3, True, False, 2),
    (4, 4, 6, 4, 3, False, True, 0),
])
def test_engine_with_packed_macs(h: int, w: int, cin: int, cout: int, k: int, leaky: bool,
                                 head: bool, pool: int) -> None:
    """The engine with mac_pack = 2 (another MAC array latency) is bit-exact too."""
    _check_random_pass(h, w, cin, cout, k, leaky, head, pool, CFG_PACKED, 1)


def test_extra_param_bytes_set_error() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (2, 3, 2))
    wt = rng.integers(-127, 128, (4, 1, 1, 2))
    b, shift = rng.integers(-100, 100, 4), np.full(4, 3)
    got, err, _ = _run(x, wt, b, shift, True, False, 0, extra=3)
    assert got == ref_engine(x, wt, b, shift, leaky=True, head=False, pool=0,
                             cfg=CFG).reshape(-1).tolist()
    assert err == 1


def test_group_size() -> None:
    # 1152 bytes = 72 words of 4x4; 3x3 with 16 channels: 36 words per row block.
    assert group_size(CFG, 3, 16) == 8
    assert group_size(CFG, 3, 3) == 16       # 3 channels pad to 4; capped by max_group
    assert group_size(CFG, 1, 16) == 16      # capped by max_group (max_in_channels)
    assert group_size(HwConfig(), 3, 512) == 8
    assert group_size(HwConfig(), 3, 128) == 32
    assert group_size(HwConfig(), 3, 3) == 512


def test_group_params_layout() -> None:
    """The weight memory's words in address order (R = 4 rows of C = 4 products, rows and
    products past the group's zero), then the tail padded to param_beat = 16 bytes."""
    w = np.arange(-6, 6).reshape(2, 1, 1, 6)
    raw = group_params(CFG, w, np.array([1, -2]), np.array([3, 31]))
    z = [0] * 4
    assert raw[:32] == bytes(v & 0xFF for v in [-6, -5, -4, -3, 0, 1, 2, 3, *z, *z,
                                                 -2, -1, 0, 0, 4, 5, 0, 0, *z, *z])
    assert raw[32:40] == bytes([1, 0, 0, 0, 0xFE, 0xFF, 0xFF, 0xFF])
    assert raw[40:] == bytes([3, 31] + [0] * 6) and len(raw) == param_bytes(CFG, 1, 6, 2)
    # 3x3: input channel-major, w[o, ky, kx, c] at product c * 9 + ky * 3 + kx; 27
    # products of 3 channels in 7 words of 4 (the last padded).
    wp = np.arange(27).reshape(1, 3, 3, 3)
    raw = group_params(CFG, wp, np.zeros(1), np.zeros(1))
    want = [int(wp[0, t // 3, t % 3, c]) for c in range(3) for t in range(9)]
    assert want[:3] == [0, 3, 6] and want[9] == 1
    assert bytes(raw[16 * v + n] for v in range(7) for n in range(4)) == bytes([*want, 0])
    assert len(raw) == 7 * 16 + 16 == param_bytes(CFG, 3, 3, 1)


def test_weights_past_memory_set_error() -> None:
    """cout above the group limit: the weights overflow the memory and raise param_err."""
    cin, cout = 16, 12
    assert cout > group_size(CFG, 3, cin)
    dut = LayerEngine(CFG)
    flags: list[int] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.layer, {"width": 4, "height": 4, "cin": cin, "cout": cout, "k3": 1,
                            "leaky": 0, "head": 0, "pool": 0})
        await ctx.tick().repeat(2)        # `shape_ok` judges the registers
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.params.valid, 1)
        sent, total = 0, param_bytes(CFG, 3, cin, cout) // CFG.param_beat
        while sent < total:
            if sent == CFG.weight_mem_bytes // CFG.param_beat:   # two row blocks fill it
                flags.append(ctx.get(dut.param_err))
            *_, ready = await ctx.tick().sample(dut.params.ready)
            sent += ready
        ctx.set(dut.params.valid, 0)
        await ctx.tick().repeat(CFG.param_beat + 1)    # the last beat's bytes, one a cycle
        flags.extend([ctx.get(dut.param_err), ctx.get(dut.loaded)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert flags == [0, 1, 1]
