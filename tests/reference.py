"""Reference models of the gateware blocks, for the tests (tests/ and sim/).

Each `ref_<block>` states what its block computes, exactly, in integers; the block tests
compare the RTL against them. They are built on the golden model (`sw.runtime.golden`)
and the integer arithmetic (`hw.spec.intmath`), so a block agrees with the whole-network
model by construction of its test. The gateware itself never imports them.
"""

from __future__ import annotations

import numpy as np

from hw.spec import intmath
from hw.spec.config import DEFAULT, HwConfig
from hw.spec.engine import (
    POOL_NONE,
    POOL_S1,
    POOL_S2,
    TAPS,
    column_pooled,
    max_group,
    param_bytes,
    param_walk,
    walk_vectors,
)
from hw.spec.memory import Pass
from sw.runtime import golden

__all__ = ["check_layers", "check_program", "mac_one_hot_groups", "ref_engine",
           "ref_layer_decode", "ref_mac", "ref_maxpool", "ref_pass_input", "ref_pass_output",
           "ref_pass_params", "ref_program", "ref_requant", "ref_windows"]


def ref_windows(x: np.ndarray, k: int) -> np.ndarray:
    """Windows of an (H, W, C) map (`hw.linebuf.WindowGen`): (H, W, C, 9) int64, zero
    padded on all borders.

    k = 3: tap ky * 3 + kx of window (i, j, c) is x[i + ky - 1, j + kx - 1, c], or 0 outside
    the map. k = 1: only the centre tap (index 4) carries x[i, j, c], the others are 0.
    """
    x = np.asarray(x, dtype=np.int64)
    h, w, c = x.shape
    out = np.zeros((h, w, c, TAPS), dtype=np.int64)
    if k == 1:
        out[..., TAPS // 2] = x
        return out
    if k != 3:
        raise ValueError(f"kernel size must be 1 or 3, got {k}")
    p = np.zeros((h + 2, w + 2, c), dtype=np.int64)
    p[1:-1, 1:-1] = x
    for ky in range(3):
        for kx in range(3):
            out[..., ky * 3 + kx] = p[ky:ky + h, kx:kx + w]
    return out


def expand_windows(transfers: list[dict[str, object]]) -> list[list[int]]:
    """`WindowGen` output transfers (`gen_layout`: ``taps``, ``two``) as one window per
    channel, as `ref_windows` lists them: a ``two`` transfer (1x1 mode) as the windows
    of its two channels, centre taps 4 and 5."""
    out: list[list[int]] = []
    for t in transfers:
        taps = [int(v) for v in t["taps"]]
        if not t["two"]:
            out.append(taps)
            continue
        for v in taps[TAPS // 2:TAPS // 2 + 2]:
            w = [0] * TAPS
            w[TAPS // 2] = v
            out.append(w)
    return out


def ref_mac(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Dot products of one group (`hw.mac_array.MacArray`): x is (n, C), w is (n, R, C);
    returns (R,) int64, the sum of all n * C products per output channel, exactly."""
    return np.einsum("nc,nrc->r", np.asarray(x, np.int64), np.asarray(w, np.int64))


def mac_one_hot_groups(rows: int, cols: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """MAC array test groups (x (1, C), w (1, R, C)) that catch swapped rows or columns and
    misaligned skew: one activation, two weights in its column, a different pair each."""
    out = []
    for k in range(max(rows, cols)):
        x = np.zeros((1, cols), dtype=np.int64)
        w = np.zeros((1, rows, cols), dtype=np.int64)
        x[0, k % cols] = 3 + k
        w[0, k % rows, k % cols] = -5 - k
        w[0, (k + 1) % rows, k % cols] = 7
        out.append((x, w))
    return out


def ref_requant(acc: int, bias: int, shift: int, leaky: bool, head: bool,
                cfg: HwConfig = DEFAULT) -> int:
    """One requantizer transfer (`hw.requant.Requantizer`): `intmath.requant`."""
    out_bits = cfg.head_bits if head else cfg.act_bits
    return int(intmath.requant(int(acc) + int(bias), int(shift), bool(leaky), out_bits))


def ref_maxpool(x: np.ndarray, stride2: bool, vertical: bool = False) -> np.ndarray:
    """2x2 max pool of an (H, W, C) int8 map (`hw.maxpool.MaxPool`), int64.

    Stride 2 drops an odd last row/column (`golden.maxpool(x, 2, 2, 0)`). Stride 1 keeps
    H x W: the window at (i, j) covers rows i..i+1 and columns j..j+1, ignoring positions
    past the bottom/right edge (Darknet's padding 1, `golden.maxpool(x, 2, 1, 1)`).
    `vertical` (with stride 2): 2x1 windows, rows 2i and 2i+1 of each column.
    """
    x = np.asarray(x, dtype=np.int64)
    if vertical:
        if not stride2:
            raise ValueError("vertical pooling needs stride2")
        h, w, c = x.shape
        return x[:2 * (h // 2)].reshape(h // 2, 2, w, c).max(axis=1)
    return np.asarray(golden.maxpool(x, 2, 2, 0) if stride2 else golden.maxpool(x, 2, 1, 1),
                      dtype=np.int64)


def ref_engine(x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: np.ndarray, *,
               leaky: bool, head: bool, pool: int, cfg: HwConfig = DEFAULT) -> np.ndarray:
    """One engine pass (`hw.engine.LayerEngine`): (OH, OW, cout) int64.

    x: (H, W, cin) int8; w: (cout, k, k, cin) OHWI int8; b: (cout,) int32; shift: (cout,).
    Conv stride 1, pad k // 2 (`golden.conv_acc`, bias included), `intmath.requant`, then
    the pool: `POOL_S2` = size 2 stride 2 without padding (odd last row and column
    dropped), `POOL_S1` = size 2 stride 1 with Darknet's padding 1 (border rule).
    """
    k = w.shape[1]
    acc = golden.conv_acc(np.asarray(x), np.asarray(w), np.asarray(b), 1, k // 2)
    y = intmath.requant(acc, np.asarray(shift, dtype=np.int64), leaky,
                        cfg.head_bits if head else cfg.act_bits)
    if pool in (POOL_S2, POOL_S1):
        y = ref_maxpool(y, pool == POOL_S2)
    return np.asarray(y, dtype=np.int64)


def ref_layer_decode(cfg: HwConfig, layer: dict[str, int]) -> dict[str, object]:
    """What the engine derives from its layer registers (`hw.engine.LayerDecode`): the
    shape check, the pass setup (`setup_layout`; last indices as value - 1, not yet cut
    to their fields' widths) and the frames of the window generator and the max pool
    (whose channels are transfers of `HwConfig.out_lanes`) during a pass (between passes
    both are 1x1x1 with every mode off)."""
    w, h, cin, cout = layer["width"], layer["height"], layer["cin"], layer["cout"]
    k3, pool = bool(layer["k3"]), layer["pool"]
    shape_ok = (1 <= w <= cfg.max_width and 1 <= h <= cfg.max_width
                and 1 <= cin <= cfg.max_in_channels and 1 <= cout <= max_group(cfg)
                and pool in (POOL_NONE, POOL_S2, POOL_S1)
                and (pool == POOL_NONE or not layer["head"])
                and (not k3 or w * cin <= cfg.line_buffer_depth)
                and (pool == POOL_NONE or w * cout <= cfg.line_buffer_depth))
    hpool = column_pooled(cfg, w, cout, pool)
    s2 = pool == POOL_S2
    walk = param_walk(3 if k3 else 1, cin)
    conv_w = w // 2 if hpool else w
    setup = {
        "k3": int(k3), "hpool": int(hpool), "walk": walk,
        "cout_m1": cout - 1, "ser_m1": -(-cout // cfg.out_lanes) - 1, "cin_m1": cin - 1,
        "walk_m1": walk - 1,
        "width_m1": w - 1, "height_m1": h - 1, "conv_w_m1": conv_w - 1,
        "out_w_m1": (w // 2 if s2 else w) - 1, "out_h_m1": (h // 2 if s2 else h) - 1,
        "out_none": int(s2 and (w < 2 or h < 2)),
    }
    return {"shape_ok": int(shape_ok), "setup": setup,
            "window": {"width": w, "height": h, "channels": cin, "k3": int(k3)},
            "pool": {"width": conv_w, "height": h, "channels": -(-cout // cfg.out_lanes),
                     "stride2": int(s2),
                     "vertical": int(hpool)}}


def ref_pass_params(mem: np.ndarray, p: Pass,
                    cfg: HwConfig = DEFAULT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pass's parameter block read from a memory image (`group_params` on `cfg`: the
    weight memory's words, R rows of C products of each output channel's flat walk, input
    channel-major; the tail padded to param_beat): (w OHWI int8, b int32, shift)."""
    k, r, c = p.k, cfg.array_rows, cfg.array_cols
    walk, nv, nrb = param_walk(k, p.cin), walk_vectors(cfg, k, p.cin), -(-p.cout // r)
    n = nrb * nv * r * c
    blob = mem[p.param_addr:p.param_addr + p.param_len]
    assert p.param_len == param_bytes(cfg, k, p.cin, p.cout), \
        "param_len does not match the pass's shape"
    rows = blob[:n].view(np.int8).reshape(nrb, nv, r, c).transpose(0, 2, 1, 3)
    w = rows.reshape(nrb * r, nv * c)[:p.cout, :walk]
    return (w.reshape(p.cout, p.cin, k, k).transpose(0, 2, 3, 1),
            blob[n:n + 4 * p.cout].view("<i4"),
            blob[n + 4 * p.cout:n + 5 * p.cout].astype(np.int64))


def ref_pass_input(mem: np.ndarray, p: Pass) -> np.ndarray:
    """A pass's input (H, W, cin) int8 read from a memory image (`in_addr`, `in_pitch`)."""
    idx = np.arange(p.height * p.width)[:, None] * p.in_pitch + np.arange(p.cin)
    return mem[p.in_addr + idx].view(np.int8).reshape(p.height, p.width, p.cin)


def ref_pass_output(mem: np.ndarray, p: Pass, y: np.ndarray, cfg: HwConfig = DEFAULT) -> None:
    """Write a pass's output (OH, OW, cout) into a memory image (`out_addr`, `out_pitch`,
    2x2 copies with `upsample`, values of `out_value_bytes` bytes little-endian)."""
    from hw.spec.engine import out_value_bytes

    vb = out_value_bytes(cfg, bool(p.head))
    if p.upsample:
        y = y.repeat(2, axis=0).repeat(2, axis=1)
    oh, ow, _ = y.shape
    data = y.astype(np.int8 if vb == 1 else f"<i{vb}").reshape(oh * ow, -1).view(np.uint8)
    idx = np.arange(oh * ow)[:, None] * p.out_pitch + np.arange(p.cout * vb)
    mem[p.out_addr + idx] = data


def ref_program(mem: np.ndarray, passes: list[Pass], cfg: HwConfig = DEFAULT) -> np.ndarray:
    """A program of pass descriptors (`hw.spec.memory.Pass`) executed on a memory image
    (uint8 array, changed in place and returned): each pass's parameters and input read
    and its output written as `hw.spec.memory` states, the pass itself `ref_engine`."""
    for p in passes:
        w, b, shift = ref_pass_params(mem, p, cfg)
        y = ref_engine(ref_pass_input(mem, p), w, b, shift, leaky=bool(p.leaky),
                       head=bool(p.head), pool=p.pool, cfg=cfg)
        ref_pass_output(mem, p, y, cfg)
    return mem


def check_layers(bundle, image, mem: np.ndarray, want: list) -> int:
    """Assert that every layer output a compiled network (`sw.runtime.program.NetworkImage`)
    stores in the memory image `mem` equals `want` (the golden model's `run(x, keep=True)`)
    bit for bit; returns how many layers were compared."""
    compared = 0
    for i, view in enumerate(image.layer_views):
        if view is None:            # a conv whose max pool ran fused, or that wrote upsampled
            assert bundle.layers[i + 1]["kind"] in ("maxpool", "upsample")
            continue
        got = view.read(mem)
        diff = np.argwhere(got != want[i])
        assert got.shape == want[i].shape, f"layer {i}: {got.shape} != {want[i].shape}"
        assert diff.size == 0, (f"layer {i}: {len(diff)} values differ, first at "
                                f"{tuple(diff[0])}: expected {want[i][tuple(diff[0])]}, "
                                f"got {got[tuple(diff[0])]}")
        compared += 1
    return compared


def check_program(bundle, image, x: np.ndarray) -> int:
    """Run a compiled network with `ref_program` on input x and `check_layers` against the
    golden model; returns how many layers were compared."""
    mem = image.memory()
    image.input.write(mem, x)
    mem = ref_program(mem, image.passes, image.cfg)
    return check_layers(bundle, image, mem, golden.GoldenModel(bundle).run(x, keep=True))
