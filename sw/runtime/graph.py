"""The layer graph and the float parameters of a parsed network, in NumPy.

The graph is a list of per-layer dicts with a 'kind' and its parameters (the form bundle
manifests store and every model walks). The float parameters are the convolutions with
batch norm folded, rounded to float32 as the PyTorch float model holds them
(`sw.quant.model.FloatModel`), kept as float64 arrays; `equalize_params` rescales them
exactly as the quantizer's equalization does, so the shipped default bundle can be
rebuilt here without torch (`sw.runtime.compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sw.runtime.darknet import (
    Conv,
    ConvWeights,
    MaxPool,
    Network,
    Route,
    Upsample,
    YoloHead,
    fuse_bn,
)

__all__ = ["Params", "conv_inputs", "equalize_params", "float_params", "network_kinds",
           "scale_groups", "scale_roots"]

#: Per conv layer: (weights OIHW, bias), float64 arrays holding float32 values.
Params = dict[int, tuple[np.ndarray, np.ndarray]]


def network_kinds(net: Network) -> list[dict[str, Any]]:
    """The graph of a parsed cfg in the dict form the models walk."""
    out = []
    for layer in net.layers:
        if isinstance(layer, Conv):
            out.append({"kind": "conv"})
        elif isinstance(layer, MaxPool):
            out.append({"kind": "maxpool", "size": layer.size, "stride": layer.stride,
                        "padding": layer.padding})
        elif isinstance(layer, Upsample):
            out.append({"kind": "upsample", "stride": layer.stride})
        elif isinstance(layer, Route):
            out.append({"kind": "route", "layers": list(layer.layers)})
        elif isinstance(layer, YoloHead):
            out.append({"kind": "yolo"})
    return out


def scale_roots(kinds: Sequence[dict[str, Any]], j: int) -> list[int]:
    """The conv layers whose output scale layer j's output carries (none for the input,
    j < 0): itself for a conv, its sources' for a route, its input's otherwise."""
    if j < 0:
        return []
    kind = kinds[j]["kind"]
    if kind == "conv":
        return [j]
    if kind == "route":
        return [r for src in kinds[j]["layers"] for r in scale_roots(kinds, src)]
    return scale_roots(kinds, j - 1)


def scale_groups(kinds: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Conv layers that must share one output scale because a route concatenates their
    outputs (transitively), each group sorted, groups ordered by their first layer."""
    parent = {i: i for i, layer in enumerate(kinds) if layer["kind"] == "conv"}

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for layer in kinds:
        if layer["kind"] == "route" and len(layer["layers"]) > 1:
            roots = [r for src in layer["layers"] for r in scale_roots(kinds, src)]
            for r in roots[1:]:
                parent[find(r)] = find(roots[0])
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values())


def conv_inputs(kinds: Sequence[dict[str, Any]], channels: dict[int, int],
                ) -> dict[int, list[tuple[int, int]]]:
    """Per conv layer j: (producer conv p, channel offset in j's input) for every conv whose
    output (through maxpool, upsample, route) forms j's input; [] for the network input.

    `channels` gives each conv's number of output channels."""
    out: dict[int, list[tuple[int, int]]] = {}
    for j, layer in enumerate(kinds):
        if layer["kind"] != "conv":
            continue
        off, src = 0, []
        for p in scale_roots(kinds, j - 1):
            src.append((p, off))
            off += channels[p]
        out[j] = src
    return out


def _float32(params: Params) -> Params:
    return {i: (w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64))
            for i, (w, b) in params.items()}


def float_params(net: Network, weights: Sequence[ConvWeights]) -> Params:
    """The float network's convolutions (`darknet.fuse_bn`), rounded to float32."""
    return _float32({i: fuse_bn(cw) for i, cw in zip(net.conv_indices, weights, strict=True)})


def equalize_params(params: Params, kinds: Sequence[dict[str, Any]],
                    scales: dict[int, np.ndarray]) -> Params:
    """The same float function with conv i's output channels multiplied by scales[i] and
    every consumer's matching input columns divided by them (computed in float64, then
    rounded to float32). ValueError for a scale that is not positive and finite."""
    out = {i: (w.copy(), b.copy()) for i, (w, b) in params.items()}
    channels = {i: w.shape[0] for i, (w, _) in out.items()}
    for p, s in scales.items():
        if np.any(s <= 0) or not np.all(np.isfinite(s)):
            raise ValueError(f"layer {p}: equalization scales must be positive and finite")
        w, b = out[p]
        w *= s[:, None, None, None]
        b *= s
    for j, srcs in conv_inputs(kinds, channels).items():
        for p, off in srcs:
            if p in scales:
                out[j][0][:, off:off + channels[p]] /= scales[p][None, :, None, None]
    return _float32(out)
