"""What limits the layer engine's MAC utilization, per layer, and what changes would buy.

    python -m bench.engine_limits [--board NAME | --config HWCONFIG.json] [--json]
    python -m bench.engine_limits --board NAME --search [--min-macs N]

Two parts, both from the no-stall schedule (`hw.spec.engine.engine_cycles`, checked
against Verilator within 1% by sim/test_engine.py and bench/board_slices.py):

1. **Where the cycles go**, per conv layer of the compiled program (all its groups): the
   cycles split into the ideal (MACs / (R*C)), *row padding* (``ceil(cout/R)`` row blocks
   for ``cout`` channels), *lane padding* (the flat walk's ``k*k*cin`` products in
   ``ceil(k*k*cin/C)`` vectors of C lanes), *serializer* (a pixel's ``cout``
   channels, one a cycle, longer than its array vectors) and *fill and bubbles* (the
   window generator's row 0 and the start of row 1 before the first window, input-bound
   stretches at one byte a cycle, the pipeline tail). ``bound`` names the per-pixel
   term that sets the pace: ``array`` (its vectors), ``serial`` or ``input`` (``cin``
   cycles a pixel).
2. **Projections**: the same schedule with one hypothetical engine change at a time, or
   several (`Change`), per layer and per frame (parameter beats added as in `bench.fps`).
   These are model figures of hardware that does not exist yet, to choose what to build;
   `schedule` with no change is `engine_cycles` exactly (tests/test_engine_limits.py).
   ``--search`` ranks array shapes for a board with all the changes applied.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass

from bench.fps import board_config
from boards import BOARDS
from hw.spec.config import HwConfig, load_config
from hw.spec.engine import (
    BANKS,
    POOL_NONE,
    POOL_S1,
    POOL_S2,
    TAPS,
    PassError,
    column_pooled,
    input_steps_1x1,
    mac_latency,
    pairs_1x1,
    walk_vectors,
)
from hw.spec.memory import ProgramError
from sw.runtime.bundle import Bundle
from sw.runtime.detect import shipped_bundle
from sw.runtime.program import compile_network

__all__ = ["CHANGES", "Change", "breakdown", "frame", "schedule"]


@dataclass(frozen=True)
class Change:
    """Hypothetical engine changes (all off: the engine as built).

    - ``ser``: the serializer, requantizer and output take ``ser`` channels a cycle (as
      built: `HwConfig.out_lanes` in stride-2 pooled groups, else one);
    - ``col0``: the 3x3 walk's column-0 positions (no window) take two input values a
      cycle, as row 0 does with two-value transfers;
    - ``split``: the RGB layer (3x3, 3 channels) runs two horizontally adjacent pixels in
      ``ceil(2 * 27 / C)`` vectors a row block, the vector shared by both pixels split
      between two accumulators per row (needs a second partial-sum tap in the array);
    - ``params_hidden``: a pass's parameter beats overlap the previous pass (frame total).
    """

    name: str = "as built"
    ser: int = 1
    col0: bool = False
    split: bool = False
    params_hidden: bool = False


#: The projections printed (each a change the analysis in docs/engine.md discusses).
CHANGES = (
    Change(),
    Change("column 0 at 2 values/cycle", col0=True),
    Change("serializer 2 ch/cycle", ser=2),
    Change("serializer 2 + split packing", ser=2, split=True),
    Change("all above, serializer 4", ser=4, split=True, col0=True),
    Change("all above + params hidden", ser=4, split=True, col0=True, params_hidden=True),
)


def _per_pixel(cfg: HwConfig, w: int, cin: int, cout: int, k: int, pool: int,
               ch: Change) -> tuple[float, float]:
    """(array vectors, serializer cycles) of one output pixel."""
    nrb, nv = math.ceil(cout / cfg.array_rows), walk_vectors(cfg, k, cin)
    if ch.split and k == 3 and cin == 3:
        nv = math.ceil(2 * TAPS * cin / cfg.array_cols) / 2
    lanes = max(ch.ser, cfg.out_lanes if pool == POOL_S2 else 1)
    ser = math.ceil(cout / lanes) / (2 if column_pooled(cfg, w, cout, pool) else 1)
    return nrb * nv, ser


def schedule(cfg: HwConfig, h: int, w: int, cin: int, cout: int, k: int,
             pool: int = POOL_NONE, pairs: bool = False, ch: Change = Change()) -> int:
    """Cycles of one pass: `engine_cycles`'s pixel-by-pixel replay, with `ch` applied."""
    array, ser = _per_pixel(cfg, w, cin, cout, k, pool, ch)
    busy = max(array, ser)
    rows, cols = (h + 1, w + 1) if k == 3 else (h, w)
    gen_t = mac_t = 0.0
    finish: list[float] = []
    if k == 3:
        gen_t = (w * cin + 1) // 2 if pairs and cin >= 2 else w * cin
        gen_t += cin if w * cin <= 2 else 0
    pair1 = k == 1 and pairs and pairs_1x1(cfg)
    for _ in range(1 if k == 3 else 0, rows):
        for x in range(cols):
            if k == 3 and x == 0:
                gen_t += cin / 2 if ch.col0 and cin >= 2 else cin
                continue
            n = len(finish)
            if n >= BANKS:
                gen_t = max(gen_t, finish[n - BANKS])
            gen_t += input_steps_1x1(cin, n) if pair1 else cin
            mac_t = max(mac_t, gen_t) + busy
            finish.append(mac_t)
    tail = mac_latency(cfg) + 20 + (3 if pool != POOL_NONE else 0)
    tail += (w + 1) * cout if pool == POOL_S1 else 0
    if pool == POOL_S2:
        tail += max(0, math.ceil((w // 2) * cout / ch.ser) - math.ceil(w * busy))
    return math.ceil(mac_t) + tail


@dataclass
class LayerRow:
    """One conv layer's passes: MACs, cycles and their split (module docstring)."""

    layer: int
    shape: str
    groups: int
    macs: int
    cycles: int
    ideal: float = 0.0
    row_pad: float = 0.0
    lane_pad: float = 0.0
    serial: float = 0.0
    fill: float = 0.0
    bound: str = ""

    @property
    def utilization(self) -> float:
        return self.ideal / self.cycles


def breakdown(cfg: HwConfig, bundle: Bundle, ch: Change = Change()) -> list[LayerRow]:
    """Per conv layer of `bundle` compiled for `cfg`: the split of its cycles."""
    image = compile_network(bundle, cfg)
    r, c = cfg.array_rows, cfg.array_cols
    out: dict[int, LayerRow] = {}
    for p, i, macs in zip(image.passes, image.pass_layers, image.macs, strict=True):
        if not macs:
            continue
        lay = bundle.layers[i]
        row = out.setdefault(i, LayerRow(i, f"{p.height}x{p.width}x{p.cin} {p.k}x{p.k}",
                                         0, 0, 0))
        cyc = schedule(cfg, p.height, p.width, p.cin, p.cout, p.k, p.pool,
                       p.input_pairs(cfg), ch)
        array, ser = _per_pixel(cfg, p.width, p.cin, p.cout, p.k, p.pool, ch)
        px = p.height * p.width
        nrb = math.ceil(p.cout / r)
        ideal = macs / (r * c)
        row_pad = px * (nrb - p.cout / r) * array / nrb
        terms = {"array": array, "serial": ser, "input": float(p.cin)}
        row.groups += 1
        row.macs += macs
        row.cycles += cyc
        row.ideal += ideal
        row.row_pad += row_pad
        row.lane_pad += px * array - ideal - row_pad
        row.serial += px * max(0.0, ser - array)
        row.fill += cyc - px * max(array, ser)
        row.bound = max(terms, key=lambda t: terms[t])
        assert lay["kind"] == "conv"
    return list(out.values())


def frame(cfg: HwConfig, bundle: Bundle, ch: Change = Change()) -> dict[str, float]:
    """Frame totals with `ch`: engine cycles, parameter beats, cycles, utilization, fps."""
    image = compile_network(bundle, cfg)
    eng = sum(schedule(cfg, p.height, p.width, p.cin, p.cout, p.k, p.pool,
                       p.input_pairs(cfg), ch) for p in image.passes)
    beats = sum(p.param_len // cfg.param_beat for p in image.passes)
    total = eng + (0 if ch.params_hidden else beats)
    macs = sum(image.macs)
    return {"engine_cycles": eng, "param_beats": beats, "cycles_per_frame": total,
            "utilization": macs / (cfg.macs_per_cycle * total),
            "engine_utilization": macs / (cfg.macs_per_cycle * eng),
            "fps_compute": cfg.clock_hz / total}


#: Array widths `search` tries (with the flat walk C need not divide the channel counts).
WIDTHS = (8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32)


def search(board: str, ch: Change, top: int = 8,
           min_macs: int = 300) -> list[tuple[float, float, int, int]]:
    """Array shapes R x C (two MACs per multiplier on Artix-7, one on ECP5; at least
    `min_macs` MACs; 1,024 weight words) within the board's multipliers, ranked by fps with
    `ch` applied: (fps, utilization, R, C). Block RAM is not checked."""
    base = board_config(board)
    bundle = Bundle.load(shipped_bundle(base), expect=base)
    pack = 2 if BOARDS[board].family == "xc7" else 1
    dsp = BOARDS[board].capacity["DSP48E1" if pack == 2 else "MULT18X18D"]
    out = []
    for c in WIDTHS:
        for r in range(pack, 129, pack):
            if r * c // pack + 2 > dsp or r * c < min_macs:
                continue
            cfg = dataclasses.replace(base, array_rows=r, array_cols=c, mac_pack=pack,
                                      weight_mem_bytes=1024 * r * c)
            try:
                fr = frame(cfg, bundle, ch)
            except (PassError, ProgramError):
                continue
            out.append((fr["fps_compute"], fr["utilization"], r, c))
    return sorted(out, reverse=True)[:top]


def _print(cfg: HwConfig, bundle: Bundle) -> None:
    rows = breakdown(cfg, bundle)
    print(f"HwConfig {cfg.config_id_hex}: {cfg.array_rows}x{cfg.array_cols} array, "
          f"mac_pack {cfg.mac_pack}, weight memory {cfg.weight_mem_bytes} B")
    print("Where the cycles go (share of each layer's cycles; no parameter beats):")
    print(f"{'layer':>5} {'shape':>17} {'groups':>6} {'Mcycles':>8} {'util':>6} "
          f"{'row pad':>7} {'lane pad':>8} {'serial':>6} {'fill+in':>7}  bound")
    for k in rows:
        f = [max(0.0, v / k.cycles) for v in (k.row_pad, k.lane_pad, k.serial, k.fill)]
        print(f"{k.layer:>5} {k.shape:>17} {k.groups:>6} {k.cycles / 1e6:>8.3f} "
              f"{k.utilization:>6.1%} {f[0]:>7.1%} {f[1]:>8.1%} {f[2]:>6.1%} {f[3]:>7.1%}"
              f"  {k.bound}")
    threes = [k.layer for k in rows if k.shape.endswith("3x3")]
    print("\nProjections (model only; per-frame totals include parameter beats):")
    print(f"{'change':>34} {'Mcycles':>8} {'util':>6} {'fps':>6}  3x3 layers' utilization")
    for ch in CHANGES:
        fr = frame(cfg, bundle, ch)
        per = {k.layer: k.utilization for k in breakdown(cfg, bundle, ch)}
        print(f"{ch.name:>34} {fr['cycles_per_frame'] / 1e6:>8.3f} {fr['utilization']:>6.1%} "
              f"{fr['fps_compute']:>6.2f}  "
              + " ".join(f"{i}:{per[i]:.1%}" for i in threes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--board", choices=sorted(BOARDS), help="the board's HwConfig")
    src.add_argument("--config", help="HwConfig JSON (default: the default build)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    ap.add_argument("--search", action="store_true",
                    help="with --board: rank array shapes with every change of CHANGES[-1]")
    ap.add_argument("--min-macs", type=int, default=300,
                    help="with --search: the smallest array tried (default 300)")
    args = ap.parse_args(argv)
    if args.search:
        if not args.board:
            ap.error("--search needs --board")
        print(f"{args.board}: shapes with '{CHANGES[-1].name}' (model; block RAM not checked)")
        for fps, util, r, c in search(args.board, CHANGES[-1], min_macs=args.min_macs):
            print(f"  {r}x{c}: {fps:.2f} fps, {util:.1%} utilization")
        return 0
    cfg = board_config(args.board) if args.board else load_config(args.config)
    bundle = Bundle.load(shipped_bundle(cfg), expect=cfg)
    if not args.json:
        _print(cfg, bundle)
        return 0
    print(json.dumps({
        "config_id": cfg.config_id_hex,
        "layers": [dataclasses.asdict(k) | {"utilization": k.utilization}
                   for k in breakdown(cfg, bundle)],
        "projections": [{"change": dataclasses.asdict(ch)} | frame(cfg, bundle, ch)
                        for ch in CHANGES]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
