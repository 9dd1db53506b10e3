"""LayerDecode and PassControl (hw/engine/control.py): the decoded layer registers against
`ref_layer_decode` for legal and illegal registers (and `check_pass`: a pass the host may
send is always judged legal); a pass's busy / done / cycles / param_err against the end
rule of the contract, under random event timing."""

from __future__ import annotations

import random

import pytest

from hw.engine import LayerDecode, PassControl, layer_layout, setup_layout
from hw.engine.layouts import pool_frame_layout, window_frame_layout
from hw.spec.config import HwConfig
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2, PassError, check_pass, layer_bits
from tests.hwbench import fit, simulate, to_py
from tests.reference import ref_layer_decode

CFG = HwConfig(array_rows=4, array_cols=4, max_width=16, max_in_channels=16,
               line_buffer_depth=64, weight_mem_bytes=1152)
IDLE_WINDOW = {"width": 1, "height": 1, "channels": 1, "k3": 0}
IDLE_POOL = {"width": 1, "height": 1, "channels": 1, "stride2": 0, "vertical": 0}


def _random_layer(rng: random.Random) -> dict[str, int]:
    """Register values: half of them a pass the host could send, half anything (zero,
    limits, limits + 1, random bits)."""
    bits = layer_bits(CFG)
    if rng.random() < 0.5:
        k = rng.choice((1, 3))
        cin = rng.choice((3, rng.randint(1, CFG.max_in_channels)))
        w = rng.randint(1, min(CFG.max_width, CFG.line_buffer_depth // cin))
        pool = rng.choice((POOL_NONE, POOL_S2, POOL_S1))
        return {"width": w, "height": rng.randint(1, CFG.max_width), "cin": cin,
                "cout": rng.randint(1, min(16, CFG.line_buffer_depth // w)), "k3": int(k == 3),
                "leaky": rng.randrange(2), "head": int(pool == POOL_NONE and rng.random() < 0.3),
                "pool": pool}
    return {name: rng.choice((0, 1, (1 << b) - 1, rng.randrange(1 << b)))
            for name, b in bits.items()}


def test_layer_decode_matches_reference() -> None:
    dut = LayerDecode(CFG)
    rng = random.Random(1)
    errors: list[str] = []
    legal_passes = [0]

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        for _ in range(300):
            layer, busy = _random_layer(rng), rng.randrange(2)
            ref = ref_layer_decode(CFG, layer)
            ctx.set(dut.layer, layer)
            ctx.set(dut.busy, busy)
            await ctx.tick()                               # setup, frames: 1 cycle
            got = {"setup": to_py(ctx.get(dut.setup)), "window": to_py(ctx.get(dut.window)),
                   "pool": to_py(ctx.get(dut.pool))}
            want = {"setup": fit(setup_layout(CFG), ref["setup"]),
                    "window": fit(window_frame_layout(CFG), ref["window"]) if busy
                    else IDLE_WINDOW,
                    "pool": fit(pool_frame_layout(CFG), ref["pool"]) if busy else IDLE_POOL}
            await ctx.tick()                               # shape_ok: 2 cycles
            got["shape_ok"], want["shape_ok"] = ctx.get(dut.shape_ok), ref["shape_ok"]
            if got != want:
                errors.append(f"{layer} busy={busy}: expected {want}, actual {got}")
            try:
                check_pass(CFG, layer["height"], layer["width"], layer["cin"], layer["cout"],
                           3 if layer["k3"] else 1, layer["pool"], bool(layer["head"]))
            except PassError:
                continue
            legal_passes[0] += 1
            if not ref["shape_ok"]:
                errors.append(f"{layer}: check_pass accepts it, shape_ok does not")

    simulate(dut, [bench], cycles=1000)
    assert not errors, "\n".join(errors[:3])
    assert legal_passes[0] > 50


def test_layer_layout_follows_the_contract() -> None:
    layout = layer_layout(CFG)
    assert [(name, fld.width) for name, fld in layout] == list(layer_bits(CFG).items())
    assert [fld.offset for _, fld in layout] == [0, 5, 10, 15, 20, 21, 22, 23]


def ref_pass_end(inputs: list[dict[str, int]], go: int, counts: tuple[int, int],
                 out_none: bool) -> int:
    """The cycle whose end the pass ends at: the first cycle after `go` by which the
    array's last result (`res_last`) and the last conv result (the counts[0]-th `conv`)
    came, and after the cycle of the last output (the counts[1]-th `out`) with the output
    register empty (`o_valid` low), or without outputs (`out_none`)."""
    conv = out = 0
    res_seen = conv_seen = out_seen = False
    for t in range(go + 1, len(inputs)):
        ev = inputs[t]
        res_seen |= bool(ev["res_last"])
        conv += ev["conv"]
        conv_seen |= conv == counts[0]
        out_ok = out_none or (out_seen and not ev["o_valid"])
        if res_seen and conv_seen and out_ok:
            return t
        out += ev["out"]
        out_seen |= out == counts[1]
    raise AssertionError("the scenario never ends its pass")


def _scenario(rng: random.Random, counts: tuple[int, int], length: int
              ) -> tuple[list[dict[str, int]], int]:
    """Per-cycle inputs: a refused start, then `go` (cycle 3), an overflow, `loaded`
    from a random cycle on, the conv and output events and `res_last` at random times."""
    go = 3
    inputs = [dict.fromkeys(("start", "shape_ok", "loaded", "overflow", "res_last", "conv",
                             "out", "o_valid"), 0) for _ in range(length)]
    inputs[1] |= {"start": 1}                            # refused: param_err
    inputs[go] |= {"start": 1, "shape_ok": 1}
    inputs[go + 2]["overflow"] = 1
    load = rng.randrange(go + 1, go + 20)
    for t in range(load, length):
        inputs[t]["loaded"] = 1
    for name, n in (("conv", counts[0]), ("out", counts[1])):
        for t in rng.sample(range(load, length - 40), n):
            inputs[t][name] = 1
    inputs[rng.randrange(load, length - 40)]["res_last"] = 1
    for t in range(go, length - 20):
        inputs[t]["o_valid"] = int(rng.random() < 0.6)
    return inputs, go


@pytest.mark.parametrize(("seed", "h", "w", "cout", "pool"), [
    (1, 2, 3, 2, POOL_NONE), (2, 4, 4, 3, POOL_S2), (3, 1, 4, 2, POOL_S2), (4, 3, 2, 1, POOL_S1),
])
def test_pass_control_matches_reference(seed: int, h: int, w: int, cout: int,
                                        pool: int) -> None:
    dut = PassControl(CFG)
    rng = random.Random(seed)
    layer = {"width": w, "height": h, "cin": 4, "cout": cout, "k3": 1, "leaky": 0, "head": 0,
             "pool": pool}
    setup = ref_layer_decode(CFG, layer)["setup"]
    counts = ((setup["conv_w_m1"] + 1) * h * cout,
              (setup["out_w_m1"] + 1) * (setup["out_h_m1"] + 1) * cout)
    inputs, go = _scenario(rng, counts, 60 + 3 * sum(counts))
    end = ref_pass_end(inputs, go, counts, bool(setup["out_none"]))
    outputs: list[dict[str, int]] = []

    async def bench(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.set(dut.setup, fit(setup_layout(CFG), setup))
        for ev in inputs:
            for name, v in ev.items():
                ctx.set(getattr(dut, name), v)
            _, _, busy, done, cycles, err = await ctx.tick().sample(
                dut.busy, dut.done, dut.cycles, dut.param_err)
            outputs.append({"busy": busy, "done": done, "cycles": cycles, "param_err": err})

    simulate(dut, [bench], cycles=len(inputs) + 10)
    loaded = sum(inputs[t]["loaded"] for t in range(go + 1, end + 1))
    for t, out in enumerate(outputs):
        want = {"busy": int(go < t <= end), "done": int(t > end),
                "cycles": loaded if t > end else 0 if t <= go + 1 else out["cycles"],
                "param_err": int(1 < t <= go or t > go + 2)}
        assert out == want, f"cycle {t} (go {go}, end {end}): expected {want}, actual {out}"
