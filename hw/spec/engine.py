"""The layer engine's host-facing contract (docs/engine.md): what a pass is, how its
parameters are laid out, how big a group may be, and how many cycles it takes.

The gateware (`hw.engine`) and the host's scheduler (`sw.runtime`) both read these
definitions; nothing here imports Amaranth. Part of the contract layer (`hw.spec`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from hw.spec.config import HwConfig

__all__ = [
    "BANKS",
    "HPOOL_BLOCKS",
    "LAYER_FIELDS",
    "POOL_NONE",
    "POOL_S1",
    "POOL_S2",
    "TAPS",
    "PassError",
    "check_pass",
    "column_pooled",
    "engine_cycles",
    "group_params",
    "group_size",
    "input_steps_1x1",
    "layer_bits",
    "mac_latency",
    "max_group",
    "out_queue_depth",
    "out_value_bytes",
    "pairs_1x1",
    "param_bytes",
    "param_walk",
    "walk_vectors",
]

#: Taps of a 3x3 window, row-major (tap ky * 3 + kx); a 1x1 layer uses the centre tap.
TAPS = 9

#: The engine's layer registers, in the order a LAYER_CONFIG payload carries them, with
#: their `struct` format on the link (docs/protocol.md): input width and height, input
#: channels, output channels of the group, 3x3 (else 1x1), leaky (else linear), head
#: output (`head_bits` wide, else int8), pool mode (`POOL_*`).
LAYER_FIELDS: tuple[tuple[str, str], ...] = (
    ("width", "H"), ("height", "H"), ("cin", "H"), ("cout", "H"),
    ("k3", "B"), ("leaky", "B"), ("head", "B"), ("pool", "B"))


#: Pixels the reorder buffer holds: one being computed, two being filled / waiting, so
#: that the window generator's row-start column (no window, cin cycles) stays hidden.
BANKS = 3


#: Pool modes of the `pool` port.
POOL_NONE, POOL_S2, POOL_S1 = 0, 1, 2

#: Stride-2 pooled groups of at most this many row blocks pool pairs of columns on the
#: accumulators, before the requantizer (exact: requantization is monotonic).
HPOOL_BLOCKS = 2


def column_pooled(cfg: HwConfig, w: int, cout: int, pool: int) -> bool:
    """Whether a group pools column pairs on the accumulators (`HPOOL_BLOCKS`)."""
    return pool == POOL_S2 and cout <= HPOOL_BLOCKS * cfg.array_rows and w >= 2


def max_group(cfg: HwConfig) -> int:
    """Most output channels of one group: sizes the bias and shift memories.

    ``weight_mem_bytes // (9 * array_cols)`` (the group of a 3x3 layer with C input
    channels: 9 words a row block), at most ``max_in_channels`` (the max pool's channel
    limit), rounded down to a multiple of ``array_rows``.
    """
    n = min(cfg.weight_mem_bytes // (TAPS * cfg.array_cols), cfg.max_in_channels)
    return n // cfg.array_rows * cfg.array_rows


def group_size(cfg: HwConfig, k: int, cin: int) -> int:
    """Largest group (output channels, a multiple of array_rows) the engine can run.

    The weight memory stores ``ceil(cout/R) * walk_vectors`` words of R x C bytes (each
    output channel's flat walk padded to a multiple of C). 0 when not even R channels fit.
    """
    if k not in (1, 3) or cin < 1:
        raise ValueError(f"k must be 1 or 3 and cin >= 1, got k={k} cin={cin}")
    r, c = cfg.array_rows, cfg.array_cols
    words = cfg.weight_mem_bytes // (r * c)
    blocks = words // walk_vectors(cfg, k, cin)
    return min(blocks * r, max_group(cfg))


class PassError(ValueError):
    """A pass (or a layer) the engine cannot run on this config."""


def check_pass(cfg: HwConfig, h: int, w: int, cin: int, cout: int, k: int, pool: int = POOL_NONE,
               head: bool = False) -> None:
    """PassError unless the engine runs this pass (the limits its `shape_ok` checks, plus
    the group size): 1x1 or 3x3; `1 <= w, h <= max_width`; `1 <= cin <= max_in_channels`;
    `1 <= cout <= group_size`; pool mode 0-2, none with a head; `w * cin` within the line
    buffer for 3x3 and `w * cout` within it with a pool."""
    if k not in (1, 3):
        raise PassError(f"the engine runs 1x1 and 3x3 convolutions, not {k}x{k}")
    if pool not in (POOL_NONE, POOL_S2, POOL_S1):
        raise PassError(f"pool mode {pool} is not one of {POOL_NONE}, {POOL_S2}, {POOL_S1}")
    if pool != POOL_NONE and head:
        raise PassError("the engine pools only int8 (non-head) layers")
    if not (1 <= w <= cfg.max_width and 1 <= h <= cfg.max_width):
        raise PassError(f"a {h}x{w} map exceeds max_width={cfg.max_width}")
    if not 1 <= cin <= cfg.max_in_channels:
        raise PassError(f"{cin} input channels exceed max_in_channels={cfg.max_in_channels}")
    g = group_size(cfg, k, cin)
    if not 1 <= cout <= g:
        raise PassError(f"a group of {cout} output channels ({k}x{k}x{cin} weights) exceeds "
                        f"the engine's group size {g} (weight_mem_bytes={cfg.weight_mem_bytes})")
    if k == 3 and w * cin > cfg.line_buffer_depth:
        raise PassError(f"a {w}x{cin} input row exceeds line_buffer_depth="
                        f"{cfg.line_buffer_depth}")
    if pool != POOL_NONE and w * cout > cfg.line_buffer_depth:
        raise PassError(f"a {w}x{cout} pooled row exceeds line_buffer_depth="
                        f"{cfg.line_buffer_depth}")


def param_walk(k: int, cin: int) -> int:
    """Products of one output channel's flat walk: ``k*k*cin``, channel-major (product
    ``c * k*k + tap`` is input channel c at tap ky * k + kx)."""
    return k * k * cin


def walk_vectors(cfg: HwConfig, k: int, cin: int) -> int:
    """Array vectors of a pixel per row block: the flat walk (`param_walk`) in runs of C
    lanes, ``ceil(k*k*cin / C)``. C need not divide ``cin``; the last vector's lanes past
    the walk are masked."""
    return math.ceil(param_walk(k, cin) / cfg.array_cols)


def param_bytes(cfg: HwConfig, k: int, cin: int, cout: int) -> int:
    """Bytes of one group's parameter block (`group_params`), a multiple of param_beat."""
    r, c, p = cfg.array_rows, cfg.array_cols, cfg.param_beat
    return (math.ceil(cout / r) * walk_vectors(cfg, k, cin) * r * c
            + math.ceil(5 * cout / p) * p)


def group_params(cfg: HwConfig, w: np.ndarray, b: np.ndarray, shift: np.ndarray) -> bytes:
    """One group's parameter block, taken by the engine's `params` port in beats of
    `HwConfig.param_beat` bytes (which divides a weight word's R x C bytes), one a cycle:

    - the weights as the weight memory's words, in address order: for each row block of R
      output channels, for each vector v of the flat walk (`walk_vectors` a row block), R
      rows of C bytes, row r the products ``v*C .. v*C + C - 1`` of output channel ``rb*R
      + r``'s walk (`param_walk`: input channel-major, ``w[o, ky, kx, c]`` at product
      ``c * k*k + ky * k + kx``); products past the walk and rows past ``cout`` are 0;
    - the int32 little-endian biases, then one shift byte per channel, then zeros up to a
      multiple of `param_beat` bytes.

    w: (cout, k, k, cin) int8 weights of the group's channels; b: (cout,); shift: (cout,).
    """
    w, b, shift = np.asarray(w), np.asarray(b), np.asarray(shift)
    if w.ndim != 4 or b.shape != (w.shape[0],) or shift.shape != (w.shape[0],):
        raise ValueError(f"bad group shapes: w {w.shape}, b {b.shape}, shift {shift.shape}")
    cout, k, _, cin = w.shape
    r, c = cfg.array_rows, cfg.array_cols
    walk, nv, nrb = param_walk(k, cin), walk_vectors(cfg, k, cin), math.ceil(cout / r)
    rows = np.zeros((nrb * r, nv * c), np.int8)
    rows[:cout, :walk] = w.astype(np.int8).transpose(0, 3, 1, 2).reshape(cout, walk)
    words = rows.reshape(nrb, r, nv, c).transpose(0, 2, 1, 3)      # (block, vector, row, lane)
    tail = b.astype("<i4").tobytes() + shift.astype(np.uint8).tobytes()
    tail += bytes(-len(tail) % cfg.param_beat)
    return words.tobytes() + tail


def mac_latency(cfg: HwConfig) -> int:
    """Cycles from a group's last vector into the MAC array to its result (`MacArray`).

    R + C + 3 with one multiplier per MAC (input register, operand and product
    registers, C columns, R - 1 deskew steps, output register); R / 2 + C + 4 with
    ``mac_pack = 2`` (rows move in pairs, so R / 2 - 1 deskew steps, and the packed
    multiplier has three register stages: operands, product M, and P = M + bias).
    """
    mult = 2 if cfg.mac_pack == 1 else 3
    return cfg.array_rows // cfg.mac_pack + cfg.array_cols + 1 + mult


@functools.lru_cache(maxsize=256)
def pairs_1x1(cfg: HwConfig) -> bool:
    """Whether the engine takes a 1x1 map's two-value transfers two values a cycle: with
    an even `HwConfig.array_cols` (a reorder-buffer word of 9C products then never splits
    a pair of channels c, c + 1 with c even)."""
    return cfg.array_cols % 2 == 0


def input_steps_1x1(cin: int, n: int) -> int:
    """Cycles pixel `n` of a 1x1 map sent as two-value transfers takes where `pairs_1x1`:
    a transfer of channels c, c + 1 with c even is one step, any other value one step of
    its own. So cin / 2 for an even cin; for an odd cin a pixel starting at an even
    place of the stream (c, c + 1) pairs up but its last channel goes alone, (cin + 1) /
    2, and the next pixel's transfers all start at an odd channel, cin."""
    if cin % 2 == 0:
        return cin // 2
    return (cin + 1) // 2 if n * cin % 2 == 0 else cin


def engine_cycles(cfg: HwConfig, h: int, w: int, cin: int, cout: int, k: int,
                  pool: int = POOL_NONE, pairs: bool = False) -> int:
    """Expected cycles of one pass (one group) with no stalls: the documented schedule.

    A pixel occupies the array for M = max(nrb * nv, cout) cycles (nrb = ceil(cout/R)
    row blocks of nv = `walk_vectors` = ceil(k*k*cin / C) vectors; the serializer sends a
    row block's min(R, cout - r0) channels a cycle each, cout a pixel); column-pooled
    groups (`column_pooled`) serialize every other pixel only, so M = max(nrb * nv,
    cout / 2). With `HwConfig.out_lanes` L = 2 a stride-2 pooled group's serializer
    takes ceil(cout / 2) cycles a pixel (halved again when column-pooled: its output, a
    quarter of that, leaves at a value a cycle through the `out_queue_depth` queue);
    other groups leave at one value a cycle, cout a pixel, as with L = 1. The window
    generator walks its positions at cin cycles each ((H + 1) x (W + 1) in 3x3 mode less
    row 0's padding column where W * cin > 2, where row 0 and column 0 yield no window;
    H x W in 1x1 mode; with `pairs`, the input sent as two-value transfers, as the
    memory device's pass reader sends a dense input, row 0 of a 3x3 map with cin >= 2
    takes ceil(W * cin / 2) cycles, and a 1x1 pixel `input_steps_1x1` where
    `pairs_1x1`) and writes a pixel's
    windows only into a free bank of the reorder buffer (freed when the array finishes
    the pixel BANKS pixels earlier). This replays that schedule pixel by pixel, plus the
    pipeline tail (`mac_latency` + 20 cycles, 3 more with a pool, the max pool's
    padding row, (W + 1) * cout cycles, in stride-1 mode, and in stride-2 mode what of
    the last output row's floor(W / 2) * cout values, one a cycle, outlasts the row's
    W * M cycles: nothing with L = 1).
    """
    nrb = math.ceil(cout / cfg.array_rows)
    lanes = cfg.out_lanes if pool == POOL_S2 else 1
    ser = math.ceil(cout / lanes) / (2 if column_pooled(cfg, w, cout, pool) else 1)
    busy = max(nrb * walk_vectors(cfg, k, cin), ser)
    rows, cols = (h + 1, w + 1) if k == 3 else (h, w)
    gen_t = mac_t = 0
    finish: list[int] = []
    if k == 3:                         # row 0: no window, and its padding column skipped
        gen_t = (w * cin + 1) // 2 if pairs and cin >= 2 else w * cin
        gen_t += cin if w * cin <= 2 else 0
    pair1 = k == 1 and pairs and pairs_1x1(cfg)
    for _ in range(1 if k == 3 else 0, rows):
        for x in range(cols):
            if k == 3 and x == 0:
                gen_t += cin
                continue
            n = len(finish)
            if n >= BANKS:
                gen_t = max(gen_t, finish[n - BANKS])
            gen_t += input_steps_1x1(cin, n) if pair1 else cin
            mac_t = max(mac_t, gen_t) + busy
            finish.append(mac_t)
    tail = mac_latency(cfg) + 20 + (3 if pool != POOL_NONE else 0)
    tail += (w + 1) * cout if pool == POOL_S1 else 0
    if pool == POOL_S2:              # the last output row, at a value a cycle (L = 2)
        tail += max(0, (w // 2) * cout - math.ceil(w * busy))
    return math.ceil(mac_t) + tail


def out_queue_depth(cfg: HwConfig) -> int:
    """Transfers of L = `HwConfig.out_lanes` values the engine's output queue holds (L = 2
    only): a column-pooled stride-2 group's outputs come in bursts on every other row,
    up to ``W * cout / 8`` transfers ahead of the one-a-cycle output (832 in Tiny-YOLOv3's
    layers 0-4): ``line_buffer_depth / 8`` rounded down to a power of two, at least 16
    (1,024 on the A7-100T's config). A longer burst stalls the serializer until the
    queue drains; `engine_cycles` does not count those stalls."""
    return max(16, 1 << (cfg.line_buffer_depth // 8).bit_length() - 1)


def layer_bits(cfg: HwConfig) -> dict[str, int]:
    """Width in bits of each layer register in the engine (`LAYER_FIELDS` order): each
    holds 0 .. its largest legal value."""
    widths = {"width": cfg.max_width, "height": cfg.max_width, "cin": cfg.max_in_channels,
              "cout": max_group(cfg), "k3": 1, "leaky": 1, "head": 1, "pool": POOL_S1}
    return {name: widths[name].bit_length() for name, _ in LAYER_FIELDS}


def out_value_bytes(cfg: HwConfig, head: bool) -> int:
    """Bytes per output value on the link: 1, or ceil(head_bits / 8) in head mode."""
    return math.ceil(cfg.head_bits / 8) if head else 1
