"""The network schedule on the streaming device: conv layers in output-channel groups on
the engine (the input map re-sent for every group), maxpool, upsample and route on the
host, and when a 2x2 max pool may run fused in the engine's pool stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.spec.config import HwConfig
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2, PassError, engine_cycles, group_size
from sw.runtime.bundle import Bundle
from sw.runtime.device import Device
from sw.runtime.golden import host_layer

__all__ = ["LayerStats", "NetworkRun", "fused_pool_mode", "run_network"]


@dataclass
class LayerStats:
    """One conv layer on the device: groups (passes), engine cycles summed over them,
    MACs, MAC utilization (MACs / (array MACs per cycle x cycles)), bytes on the link.

    `cycles` include the engine's stalls waiting for input: on a board the link's byte
    rate, in the simulator the host's latency between frames (the harness clock keeps
    running while it waits, up to its idle limit)."""

    layer: int
    groups: int
    cycles: int
    macs: int
    utilization: float
    bytes_out: int
    bytes_in: int
    pool: int = POOL_NONE   # engine pool mode of a fused max pool
    model_cycles: int = 0   # hw.spec.engine.engine_cycles summed: the same passes, no stalls


@dataclass
class NetworkRun:
    outputs: list[np.ndarray | None]
    stats: list[LayerStats]


def fused_pool_mode(cfg: HwConfig, layers: list[dict[str, Any]], i: int, h: int, w: int,
                    cout: int) -> int:
    """The engine pool mode that runs conv layer i's following 2x2 max pool exactly, or
    POOL_NONE: stride 2 on an even map, or stride 1 with padding 1, when the conv output
    feeds no route, is no head, and its pooled row fits the line buffer (`cout`: the
    layer's group size)."""
    nxt = layers[i + 1] if i + 1 < len(layers) else {}
    routed = {j for layer in layers if layer["kind"] == "route" for j in layer["layers"]}
    if (nxt.get("kind") != "maxpool" or i in routed or layers[i]["out_bits"] > cfg.act_bits
            or nxt["size"] != 2 or w * cout > cfg.line_buffer_depth
            or cout > cfg.max_in_channels):
        return POOL_NONE
    if nxt["stride"] == 2 and h % 2 == 0 and w % 2 == 0:
        return POOL_S2
    return POOL_S1 if nxt["stride"] == 1 and nxt["padding"] == 1 else POOL_NONE


def run_network(dev: Device, cfg: HwConfig, bundle: Bundle, x: np.ndarray,
                progress: Callable[[str], None] | None = None,
                fuse_pool: bool = False) -> NetworkRun:
    """Execute a bundle on a device built for `cfg`. Returns every layer's output (as
    `GoldenModel.run`) and per-conv-layer statistics.

    `fuse_pool`: a 2x2 max pool right after a conv runs in the engine's pool stage where it
    is exact (`fused_pool_mode`); the fused conv's own output is then not computed and its
    entry is None. PassError for a layer the engine cannot run on this config."""
    dev.identify(expect=cfg)
    bundle.check_numerics(cfg)
    if x.dtype != np.int8 or x.shape != bundle.input_shape:
        raise ValueError(f"network input must be int8 {bundle.input_shape}, "
                         f"got {x.dtype} {x.shape}")
    layers = bundle.layers
    outs: list[np.ndarray | None] = []
    stats: list[LayerStats] = []
    prev = x
    pooled: np.ndarray | None = None
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        if kind == "conv":
            k = layer["size"]
            if layer["stride"] != 1 or layer["pad"] != k // 2 or k not in (1, 3):
                raise PassError(f"layer {i}: the engine runs 1x1/3x3 stride-1 'same' convs, "
                                f"got size {k} stride {layer['stride']} pad {layer['pad']}")
            h, wd, cin = prev.shape
            g = group_size(cfg, k, cin)
            if g == 0:
                raise PassError(f"layer {i}: {k}x{k}x{cin} weights of even {cfg.array_rows} "
                                f"channels exceed the weight memory ({cfg.weight_mem_bytes} B)")
            w, b, sh = bundle.weight(i), bundle.bias(i), bundle.shift(i)
            cout = w.shape[0]
            b_out, b_in, cyc, model = dev.bytes_out, dev.bytes_in, 0, 0
            pool = (fused_pool_mode(cfg, layers, i, h, wd, min(g, cout)) if fuse_pool
                    else POOL_NONE)
            parts = []
            for g0 in range(0, cout, g):
                try:
                    y, c = dev.run_group(prev, w[g0:g0 + g], b[g0:g0 + g], sh[g0:g0 + g],
                                         leaky=layer["activation"] == "leaky",
                                         head=layer["out_bits"] > cfg.act_bits, pool=pool,
                                         cfg=cfg)
                except PassError as e:
                    raise PassError(f"layer {i}: {e}") from e
                parts.append(y)
                cyc += c
                model += engine_cycles(cfg, h, wd, cin, y.shape[2], k, pool)
            y = np.concatenate(parts, axis=2)
            if pool:
                pooled, y = y, None
            macs = h * wd * k * k * cin * cout
            stats.append(LayerStats(i, -(-cout // g), cyc, macs,
                                    macs / (cfg.macs_per_cycle * cyc) if cyc else 0.0,
                                    dev.bytes_out - b_out, dev.bytes_in - b_in, pool, model))
            if progress:
                progress(f"layer {i}: {h}x{wd}x{cin} -> {cout} ({stats[-1].groups} groups"
                         f"{', max pool fused' if pool else ''}), "
                         f"{cyc} cycles ({model} without stalls), MAC utilization "
                         f"{stats[-1].utilization:.1%} "
                         f"({macs / (cfg.macs_per_cycle * model) if model else 0.0:.1%} "
                         "without stalls), "
                         f"{stats[-1].bytes_out + stats[-1].bytes_in} link bytes")
        elif kind == "maxpool" and pooled is not None:
            y, pooled = pooled, None
        else:
            y = host_layer(layer, prev, outs)
        outs.append(y)
        prev = y
    return NetworkRun(outs, stats)
