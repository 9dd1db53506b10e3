"""Shapes the layer engine's units share: the layer registers, the pass setup derived from
them, the frame settings of the window generator and the max pool, and the words of the
engine's memories. All of them are functions of the `HwConfig`; the host-facing parts
(`layer_layout`) come from the contract in `hw.spec.engine`.
"""

from __future__ import annotations

import math

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

from hw.mac_array import mac_out_layout
from hw.spec.config import HwConfig
from hw.spec.engine import BANKS, TAPS, layer_bits, max_group

__all__ = [
    "chunks_max",
    "group_max",
    "lane_depth",
    "layer_layout",
    "pair_layout",
    "pixel_depth",
    "pixel_word",
    "pool_frame_layout",
    "setup_layout",
    "walk_max",
    "weight_depth",
    "weight_word",
    "window_frame_layout",
]


def layer_layout(cfg: HwConfig) -> data.StructLayout:
    """The layer registers as one struct: `LAYER_FIELDS` in their order (the first at bit
    0), each `layer_bits(cfg)` wide (docs/engine.md, "Ports")."""
    return data.StructLayout({name: unsigned(bits) for name, bits in layer_bits(cfg).items()})


def chunks_max(cfg: HwConfig) -> int:
    """Words a pixel of `max_in_channels` channels needs (the reorder buffer's words per
    bank): a word holds 9C products, C channels of a 3x3 window."""
    return math.ceil(cfg.max_in_channels / cfg.array_cols)


def walk_max(cfg: HwConfig) -> int:
    """Longest flat walk (`hw.spec.engine.param_walk`): 9 taps of `max_in_channels`."""
    return TAPS * cfg.max_in_channels


def group_max(cfg: HwConfig) -> int:
    """Output channels the bias and shift memories hold (`max_group`, at least R)."""
    return max(max_group(cfg), cfg.array_rows)


def lane_depth(cfg: HwConfig) -> int:
    """Words of the bias and shift memories: `group_max` channels, `HwConfig.out_lanes`
    a word."""
    return math.ceil(group_max(cfg) / cfg.out_lanes)


def setup_layout(cfg: HwConfig) -> data.StructLayout:
    """What `LayerDecode` derives from the layer registers for the other units, one
    register each: the modes (`k3` 3x3, `hpool` column-pooled), the flat walk of a pixel
    (`walk` = k*k*cin products) and the counters' last indices
    (value - 1, so their ends are equalities against flip-flops). `out_none`: a
    stride-2 pool of a single row or column (no outputs)."""
    width = Shape.cast(range(cfg.max_width + 1))
    return data.StructLayout({
        "k3": 1,
        "hpool": 1,
        "walk": range(walk_max(cfg) + 1),
        "cout_m1": range(max_group(cfg) + 1),
        "ser_m1": range(max_group(cfg) + 1),   # serializer transfers a pixel, ceil(cout/L)
        "cin_m1": range(cfg.max_in_channels + 1),
        "walk_m1": range(walk_max(cfg) + 1),
        "width_m1": width,
        "height_m1": width,
        "conv_w_m1": width,          # columns of the requantized map (halved: column-pooled)
        "out_w_m1": width,           # columns and rows of the output map
        "out_h_m1": width,
        "out_none": 1,
    })


def window_frame_layout(cfg: HwConfig) -> data.StructLayout:
    """The frame ports of `WindowGen` (hw/linebuf.py)."""
    return data.StructLayout({"width": range(cfg.max_width + 1),
                              "height": range(cfg.max_width + 1),
                              "channels": range(cfg.max_in_channels + 1), "k3": 1})


def pool_frame_layout(cfg: HwConfig) -> data.StructLayout:
    """The frame ports of `MaxPool` (hw/maxpool.py)."""
    return data.StructLayout({"width": range(cfg.max_width + 1),
                              "height": range(cfg.max_width + 1),
                              "channels": range(cfg.max_in_channels + 1), "stride2": 1,
                              "vertical": 1})


def pixel_word(cfg: HwConfig) -> data.ArrayLayout:
    """A reorder-buffer word: 9C products of a pixel's flat walk (`ReorderBuffer`): in
    3x3 mode C channels of the 9 taps each, element ``lane * 9 + tap``."""
    return data.ArrayLayout(signed(cfg.act_bits), TAPS * cfg.array_cols)


def pixel_depth(cfg: HwConfig) -> int:
    """Words of the reorder buffer: `BANKS` banks of `chunks_max` words."""
    return BANKS * chunks_max(cfg)


def weight_word(cfg: HwConfig) -> data.ArrayLayout:
    """A weight-memory word: R x C int8 (element `r * C + c`), one array vector's weights."""
    return data.ArrayLayout(signed(cfg.weight_bits), cfg.array_rows * cfg.array_cols)


def weight_depth(cfg: HwConfig) -> int:
    """Words of the weight memory."""
    return cfg.weight_mem_bytes // (cfg.array_rows * cfg.array_cols)


def pair_layout(cfg: HwConfig) -> data.StructLayout:
    """One array result on its way to the serializer: `acc` (R accumulators) and, when
    `pair` is set (column-pooled groups), the previous column's `partner` result, whose
    channel-wise max with `acc` is what goes on."""
    return data.StructLayout({"acc": mac_out_layout(cfg), "partner": mac_out_layout(cfg),
                              "pair": 1})
