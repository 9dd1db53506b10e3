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
    "PACK_CIN",
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
    "layer_bits",
    "mac_latency",
    "max_group",
    "out_value_bytes",
    "packed",
    "param_bytes",
    "param_walk",
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

#: 3x3 layers with this many input channels (the RGB input layer) run packed: their
#: 9 * PACK_CIN taps x channels fill ceil(9 * PACK_CIN / C) array vectors instead of 9.
PACK_CIN = 3
#: Stride-2 pooled groups of at most this many row blocks pool pairs of columns on the
#: accumulators, before the requantizer (exact: requantization is monotonic).
HPOOL_BLOCKS = 2


def packed(cfg: HwConfig, k: int, cin: int) -> bool:
    """Whether a 3x3 group with `cin` input channels runs packed (`PACK_CIN`)."""
    return (k == 3 and cin == PACK_CIN and cfg.array_cols >= PACK_CIN
            and math.ceil(TAPS * PACK_CIN / cfg.array_cols) < TAPS)


def column_pooled(cfg: HwConfig, w: int, cout: int, pool: int) -> bool:
    """Whether a group pools column pairs on the accumulators (`HPOOL_BLOCKS`)."""
    return pool == POOL_S2 and cout <= HPOOL_BLOCKS * cfg.array_rows and w >= 2


def max_group(cfg: HwConfig) -> int:
    """Most output channels of one group: sizes the bias and shift memories.

    ``weight_mem_bytes // (9 * array_cols)`` (the group of a 3x3 layer with C input
    channels), at most ``max_in_channels`` (the max pool's channel limit), rounded down to
    a multiple of ``array_rows``.
    """
    n = min(cfg.weight_mem_bytes // (TAPS * cfg.array_cols), cfg.max_in_channels)
    return n // cfg.array_rows * cfg.array_rows


def group_size(cfg: HwConfig, k: int, cin: int) -> int:
    """Largest group (output channels, a multiple of array_rows) the engine can run.

    The weight memory stores ``ceil(cout/R) * k*k * ceil(cin/C)`` words of R x C bytes
    (input channels padded to a multiple of C). 0 when not even R channels fit.
    """
    if k not in (1, 3) or cin < 1:
        raise ValueError(f"k must be 1 or 3 and cin >= 1, got k={k} cin={cin}")
    r, c = cfg.array_rows, cfg.array_cols
    words = cfg.weight_mem_bytes // (r * c)
    blocks = words // (k * k * math.ceil(cin / c))
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


def param_walk(cfg: HwConfig, k: int, cin: int) -> tuple[int, int]:
    """The weight walk of a group's output channel: (taps, channels per tap). A packed
    group (`packed`) walks its 9 * PACK_CIN taps x channels as channels of one tap."""
    return (1, k * k * cin) if packed(cfg, k, cin) else (k * k, cin)


def param_bytes(cfg: HwConfig, k: int, cin: int, cout: int) -> int:
    """Bytes of one group's parameter block (`group_params`), a multiple of param_beat."""
    c, p = cfg.array_cols, cfg.param_beat
    taps, walk = param_walk(cfg, k, cin)
    return cout * taps * math.ceil(walk / c) * c + math.ceil(5 * cout / p) * p


def group_params(cfg: HwConfig, w: np.ndarray, b: np.ndarray, shift: np.ndarray) -> bytes:
    """One group's parameter block, taken by the engine's `params` port in beats of
    `HwConfig.param_beat` bytes (which divides C = array_cols), one a cycle:

    - the weights, OHWI, each output channel's walk (`param_walk`: per tap, its channels)
      zero-padded to a multiple of C channels, so that C bytes are the C lanes of one
      weight-memory word;
    - the int32 little-endian biases, then one shift byte per channel, then zeros up to a
      multiple of `param_beat` bytes.

    w: (cout, k, k, cin) int8 weights of the group's channels; b: (cout,); shift: (cout,).
    """
    w, b, shift = np.asarray(w), np.asarray(b), np.asarray(shift)
    if w.ndim != 4 or b.shape != (w.shape[0],) or shift.shape != (w.shape[0],):
        raise ValueError(f"bad group shapes: w {w.shape}, b {b.shape}, shift {shift.shape}")
    cout, k, _, cin = w.shape
    c = cfg.array_cols
    taps, walk = param_walk(cfg, k, cin)
    rows = np.zeros((cout, taps, math.ceil(walk / c) * c), np.int8)
    rows[:, :, :walk] = w.astype(np.int8).reshape(cout, taps, walk)
    tail = b.astype("<i4").tobytes() + shift.astype(np.uint8).tobytes()
    tail += bytes(-len(tail) % cfg.param_beat)
    return rows.tobytes() + tail


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
def engine_cycles(cfg: HwConfig, h: int, w: int, cin: int, cout: int, k: int,
                  pool: int = POOL_NONE, pairs: bool = False) -> int:
    """Expected cycles of one pass (one group) with no stalls: the documented schedule.

    A pixel occupies the array for M = max(nrb * k*k * nq, cout) cycles (nrb =
    ceil(cout/R) row blocks, nq = ceil(cin/C) chunks; the serializer sends a row block's
    min(R, cout - r0) channels a cycle each, cout a pixel). Packed groups (`packed`) run
    nq = ceil(9 * cin / C) vectors of one tap; column-pooled groups (`column_pooled`)
    serialize every other pixel only, so M = max(nrb * k*k * nq, cout / 2). The window
    generator walks its positions at cin cycles each ((H + 1) x (W + 1) in 3x3 mode less
    row 0's padding column where W * cin > 2, where row 0 and column 0 yield no window;
    H x W in 1x1 mode; with `pairs`, the input sent as two-value transfers, as the
    memory device's pass reader sends a dense input, row 0 of a 3x3 map with cin >= 2
    takes ceil(W * cin / 2) cycles) and writes a pixel's
    windows only into a free bank of the reorder buffer (freed when the array finishes
    the pixel BANKS pixels earlier). This replays that schedule pixel by pixel, plus the
    pipeline tail (`mac_latency` + 20 cycles, 3 more with a pool, and the max pool's
    padding row, (W + 1) * cout cycles, in stride-1 mode).
    """
    r, c = cfg.array_rows, cfg.array_cols
    nrb, nq, kk = math.ceil(cout / r), math.ceil(cin / c), k * k
    if packed(cfg, k, cin):
        nq, kk = math.ceil(kk * cin / c), 1
    ser = cout / 2 if column_pooled(cfg, w, cout, pool) else cout
    busy = max(nrb * kk * nq, ser)
    rows, cols = (h + 1, w + 1) if k == 3 else (h, w)
    gen_t = mac_t = 0
    finish: list[int] = []
    if k == 3:                         # row 0: no window, and its padding column skipped
        gen_t = (w * cin + 1) // 2 if pairs and cin >= 2 else w * cin
        gen_t += cin if w * cin <= 2 else 0
    for _ in range(1 if k == 3 else 0, rows):
        for x in range(cols):
            if k == 3 and x == 0:
                gen_t += cin
                continue
            n = len(finish)
            if n >= BANKS:
                gen_t = max(gen_t, finish[n - BANKS])
            gen_t += cin
            mac_t = max(mac_t, gen_t) + busy
            finish.append(mac_t)
    tail = mac_latency(cfg) + 20 + (3 if pool != POOL_NONE else 0)
    tail += (w + 1) * cout if pool == POOL_S1 else 0
    return math.ceil(mac_t) + tail


def layer_bits(cfg: HwConfig) -> dict[str, int]:
    """Width in bits of each layer register in the engine (`LAYER_FIELDS` order): each
    holds 0 .. its largest legal value."""
    widths = {"width": cfg.max_width, "height": cfg.max_width, "cin": cfg.max_in_channels,
              "cout": max_group(cfg), "k3": 1, "leaky": 1, "head": 1, "pool": POOL_S1}
    return {name: widths[name].bit_length() for name, _ in LAYER_FIELDS}


def out_value_bytes(cfg: HwConfig, head: bool) -> int:
    """Bytes per output value on the link: 1, or ceil(head_bits / 8) in head mode."""
    return math.ceil(cfg.head_bits / 8) if head else 1
