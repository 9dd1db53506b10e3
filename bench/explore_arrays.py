"""Design-space search over array shapes per board, from the engine's schedule model.

    python -m bench.explore_arrays [--board NAME ...] [--top N] [--json]

For every candidate (R = array_rows, C = array_cols, mac_pack, weight-memory depth) that
fits the board's part, compiles the shipped bundle for the candidate config
(`sw.runtime.program.compile_network`) and sums the no-stall schedule of its passes
(`hw.spec.engine.engine_cycles`) plus the parameter beats (`HwConfig.param_beat` bytes a
cycle), as `bench.fps` does. Prints per board a table ranked by cycles per frame: MACs,
multipliers (DSP48E1 / MULT18X18D), the block-RAM estimate (`bram_estimate`), cycles,
utilization, fps at the board config's clock and the worst 3x3 layer's utilization.

Fit rules (docs/gateware.md, "Array sizes per board"):

- multipliers: ``R * C / mac_pack + ENGINE_DSP`` within the part (the engine's shape
  check uses `ENGINE_DSP` = 2 more, Yosys on the default engine);
- block RAM: `bram_estimate` within the part less `DRAM_RESERVE_BRAM36` (the DRAM
  controller's share; ECP5 in DP16KD = half a BRAM36 each);
- `mac_pack = 2` only on Artix-7 (a MULT18X18D cannot hold the packed operand);
- the network compiles (every layer's group holds at least R channels).
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
from hw.spec.config import ConfigError, HwConfig
from hw.spec.engine import BANKS, PassError, max_group, out_queue_depth
from hw.spec.memory import ProgramError
from sw.runtime.bundle import Bundle
from sw.runtime.detect import shipped_bundle
from sw.runtime.program import compile_network

__all__ = ["Candidate", "bram_estimate", "evaluate", "explore", "memory_bram36"]

#: Multipliers of the engine outside the MAC array (the shape check's two products).
ENGINE_DSP = 2
#: BRAM36 equivalents left for the DRAM controller and the rest of the device.
DRAM_RESERVE_BRAM36 = 10
#: BRAM36 equivalents of the device top outside the engine (output queue; the Yosys
#: estimate of the whole default device is 1 more than the engine's, README).
DEVICE_BRAM36 = 1.0
#: BRAM36 equivalents of the engine beyond the memories `bram_estimate` lists: Yosys's
#: count of the default LayerEngine (35.5) less the listed ones (34.5).
ENGINE_OTHER_BRAM36 = 1.0
#: Simple-dual-port shapes (data bits, words) of a RAMB36E1 and of a RAMB18E1 (half one).
_BRAM36_SHAPES = ((72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384),
                  (1, 32768))
_BRAM18_SHAPES = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
#: Weight-memory depths (words of R x C bytes) tried: multiples of a 512-deep BRAM.
DEPTHS = (512, 1024, 1536, 2048)
#: Array shapes tried: C values, R up to this.
COLS = (4, 8, 9, 12, 14, 16, 18, 20, 24, 28, 32)
MAX_ROWS = 64


def memory_bram36(bits: int, words: int, family: str = "xc7") -> float:
    """BRAM36 equivalents of one `words` x `bits` memory: the cheapest tiling with one
    block shape (RAMB36E1, or RAMB18E1 at half a BRAM36; on "ecp5" only the DP16KD, which
    has the RAMB18's shapes), as Yosys's memory mapping chooses."""
    half = min(math.ceil(bits / b) * math.ceil(words / d) for b, d in _BRAM18_SHAPES)
    if family == "ecp5":
        return half / 2
    full = min(math.ceil(bits / b) * math.ceil(words / d) for b, d in _BRAM36_SHAPES)
    return min(float(full), half / 2)


def bram_estimate(cfg: HwConfig, family: str = "xc7") -> dict[str, float]:
    """BRAM36 equivalents of the device per memory (docs/gateware.md; on "ecp5" DP16KD
    blocks, two a BRAM36):

    - weights: ``weight_mem_bytes / (R*C)`` words of ``8 R C`` bits, written in lanes of
      `HwConfig.weight_lane_bytes`, each lane its own memory (how Yosys maps it; with
      lanes of `param_beat` bytes it was 16 BRAM36 for the default 576 x 512 bits, 104
      for 1,024 x 3,328 bits in 128-bit lanes);
    - reorder buffer: ``BANKS * ceil(max_in_channels / C)`` words of ``72 C`` bits (none
      with `HwConfig.reorder_lutram`: it is in LUT RAM then);
    - output queue (`HwConfig.out_lanes` = 2): `out_queue_depth` words of two head values;
    - bias and shift: `max_group` words of 32 and `shift_bits` bits;
    - window generator: two rows in 1,024 x 16 banks (one RAMB18 each), plus the column
      history, ``max_in_channels`` x 48 bits;
    - max pool: a row in 2,048 x 8 banks, plus ``max_in_channels`` bytes;
    - the engine's other memories (`ENGINE_OTHER_BRAM36`) and the device's queues
      (`DEVICE_BRAM36`).
    """
    r, c = cfg.array_rows, cfg.array_cols
    g = max(max_group(cfg), 1)

    def tile(bits: int, words: int) -> float:
        return memory_bram36(bits, words, family)

    return {
        "weights": r * c // cfg.weight_lane_bytes
        * tile(8 * cfg.weight_lane_bytes, cfg.weight_mem_bytes // (r * c)),
        "reorder": 0.0 if cfg.reorder_lutram
        else tile(72 * c, BANKS * math.ceil(cfg.max_in_channels / c)),
        "bias_shift": tile(32, g) + tile(cfg.shift_bits, g),
        "linebuf": math.ceil(cfg.line_buffer_depth / 1024) / 2
        + tile(48, cfg.max_in_channels),
        "maxpool": math.ceil(cfg.line_buffer_depth / 2048) / 2
        + tile(8, cfg.max_in_channels),
        "out_queue": tile(cfg.out_lanes * cfg.head_bits, out_queue_depth(cfg))
        if cfg.out_lanes > 1 else 0.0,
        "other": ENGINE_OTHER_BRAM36,
        "device": DEVICE_BRAM36,
    }


@dataclass(frozen=True)
class Candidate:
    """One evaluated config: its sizes, resources and schedule figures."""

    rows: int
    cols: int
    mac_pack: int
    weight_mem_bytes: int
    macs: int
    dsp: int
    bram36: float
    cycles: int
    utilization: float
    fps: float
    #: per 3x3 conv layer of the bundle: its utilization (engine cycles, no parameters)
    util3: dict[int, float]

    @property
    def worst3(self) -> tuple[int, float]:
        return min(self.util3.items(), key=lambda kv: kv[1])


def evaluate(cfg: HwConfig, bundle: Bundle) -> tuple[int, float, dict[int, float]]:
    """(cycles per frame, utilization, per-3x3-layer utilization) of `bundle` on `cfg`:
    `engine_cycles` of every pass plus its parameter beats (`bench.fps`)."""
    image = compile_network(bundle, cfg)
    per_layer: dict[int, list[int]] = {}
    total = 0
    for p, layer, macs in zip(image.passes, image.pass_layers, image.macs, strict=True):
        cyc = p.cycles(cfg)
        total += cyc + p.param_len // cfg.param_beat
        acc = per_layer.setdefault(layer, [0, 0])
        acc[0] += macs
        acc[1] += cyc
    util3 = {i: m / (cfg.macs_per_cycle * cyc) for i, (m, cyc) in per_layer.items()
             if bundle.layers[i]["kind"] == "conv" and bundle.layers[i]["size"] == 3}
    return total, sum(image.macs) / (cfg.macs_per_cycle * total), util3


def _capacity(board: str) -> tuple[int, float]:
    """(multipliers, BRAM36 equivalents) of the board's part."""
    cap = BOARDS[board].capacity
    if BOARDS[board].family == "xc7":
        return cap["DSP48E1"], float(cap["BRAM36"])
    return cap["MULT18X18D"], cap["DP16KD"] / 2


def explore(board: str, min_macs: int = 0,
            reserve: float = DRAM_RESERVE_BRAM36) -> list[Candidate]:
    """Every candidate that fits `board` with at least `min_macs` MACs and `reserve`
    BRAM36 left, fastest first."""
    base = board_config(board)
    dsp_total, bram_total = _capacity(board)
    packs = (1, 2) if BOARDS[board].family == "xc7" else (1,)
    bundle = Bundle.load(shipped_bundle(base), expect=base)
    out = []
    for pack in packs:
        for c in COLS:
            for r in range(pack, MAX_ROWS + 1, pack):
                macs, dsp = r * c, r * c // pack + ENGINE_DSP
                if macs < min_macs or dsp > dsp_total:
                    continue
                for depth in DEPTHS:
                    try:
                        cfg = dataclasses.replace(base, array_rows=r, array_cols=c,
                                                  mac_pack=pack,
                                                  weight_mem_bytes=depth * r * c)
                    except ConfigError:
                        continue
                    bram = sum(bram_estimate(cfg, BOARDS[board].family).values())
                    if bram > bram_total - reserve:
                        continue
                    try:
                        cycles, util, util3 = evaluate(cfg, bundle)
                    except (PassError, ProgramError):
                        continue
                    out.append(Candidate(r, c, pack, cfg.weight_mem_bytes, macs, dsp, bram,
                                         cycles, util, cfg.clock_hz / cycles, util3))
    return sorted(out, key=lambda k: (k.cycles, k.bram36))


def _row(k: Candidate) -> str:
    i, u = k.worst3
    return (f"| {k.rows}x{k.cols} | {k.mac_pack} | {k.weight_mem_bytes} | {k.macs} | {k.dsp} "
            f"| {k.bram36:g} | {k.cycles / 1e6:.2f} | {k.utilization:.1%} | {k.fps:.2f} "
            f"| {i}: {u:.1%} |")


#: Smallest MAC count per board (issue 17) the search keeps.
MIN_MACS = {"arty_a7": 144, "arty_a7_100": 400, "ulx3s_85f": 144, "orangecrab_85f": 144}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", action="append", choices=sorted(BOARDS),
                    help="board(s) to search (default: all)")
    ap.add_argument("--top", type=int, default=12, help="rows printed per board")
    ap.add_argument("--min-macs", type=int, help="smallest MAC count (default: per board)")
    ap.add_argument("--reserve", type=float, default=DRAM_RESERVE_BRAM36,
                    help="BRAM36 kept for the DRAM controller")
    ap.add_argument("--json", action="store_true", help="one JSON list per board")
    args = ap.parse_args(argv)
    for board in args.board or sorted(BOARDS):
        found = explore(board, args.min_macs if args.min_macs is not None
                        else MIN_MACS.get(board, 0), args.reserve)[:args.top]
        if args.json:
            print(json.dumps({"board": board, "candidates": [
                dataclasses.asdict(k) for k in found]}))
            continue
        dsp_total, bram_total = _capacity(board)
        print(f"\n{board}: {dsp_total} multipliers, {bram_total:g} BRAM36 "
              f"({args.reserve:g} kept for DRAM), clock "
              f"{board_config(board).clock_hz / 1e6:g} MHz")
        print("| RxC | pack | weight B | MACs | DSP | BRAM36 | Mcycles | util | fps "
              "| worst 3x3 |")
        print("|" + "---|" * 10)
        for k in found:
            print(_row(k))
        if not found:
            print("(no candidate fits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
