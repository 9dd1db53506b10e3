"""Compact bundles: a bundle kept as one rounding bit per weight against the float weights.

Every integer weight q of a power-of-two bundle, rounded to nearest or learned
(`sw.quant.adaround`), is floor(w 2**f_w) or floor(w 2**f_w) + 1 of its float weight w.
Given the float network the bundle rounds (the Darknet weights with BN fused, then the
bundle's equalization / grid-fill scale steps, `sw.runtime.graph.equalize_params`), one
bit per weight rebuilds it exactly. A compact file holds those bits (packed), the
exceptions (weights saturated at the int8 range), the scale steps, every other array of
the bundle (biases, f_w) and the bundle's whole manifest, so that the rebuilt bundle
carries the same content hash; unpacking checks that hash and refuses any difference.

That is how the default bundle ships (`DEFAULT`, 1.1 MB instead of 8.9 MB): it is
calibrated and AdaRound-tuned on COCO images that may not be redistributed, and what
those images decided (scales, rounding, biases) fits in the compact file. This module
reads and unpacks compact files with NumPy alone; `sw.quant.compact` makes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hw.spec.config import Numerics
from sw.runtime.bundle import Bundle, BundleError, read_npz
from sw.runtime.darknet import ConvWeights, Network
from sw.runtime.graph import Params, equalize_params, float_params, network_kinds

__all__ = ["DEFAULT", "FORMAT", "VERSION", "CompactError", "conv_layers", "floor_weights",
           "read_compact", "read_manifest", "replay", "scale_steps", "unpack"]

FORMAT = "tinyyolo-fpga-compact"
#: 2: the bundle manifest inside is a bundle of format version 2 (numerics, not HwConfig).
VERSION = 2
#: The shipped default bundle (see README, "The default bundle").
DEFAULT = Path(__file__).resolve().parent / "data" / "yolov3-tiny-default.npz"


class CompactError(BundleError):
    """A compact bundle that is corrupt, or does not fit the float weights it is unpacked on."""


def floor_weights(w: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """floor(w 2**f_w) of OIHW float weights, in the bundle's OHWI order (int64)."""
    x = np.asarray(w, np.float64) * np.exp2(fw.astype(np.float64))[:, None, None, None]
    return np.floor(x).transpose(0, 2, 3, 1).astype(np.int64)


def replay(params: Params, kinds: Sequence[dict[str, Any]],
           steps: Sequence[dict[int, np.ndarray]]) -> Params:
    """The float parameters after the bundle's equalization / fill scale steps, in order."""
    for step in steps:
        params = equalize_params(params, kinds, step)
    return params


def conv_layers(manifest: dict[str, Any]) -> list[int]:
    """The conv layer indices of a bundle manifest."""
    return [i for i, layer in enumerate(manifest["layers"]) if layer["kind"] == "conv"]


def read_compact(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest, arrays) of a compact file; CompactError if it is not one."""
    path = Path(path)
    manifest, arrays = read_npz(path, "compact bundle", CompactError, FORMAT, VERSION)
    if not isinstance(manifest.get("bundle"), dict) or "content_hash" not in manifest["bundle"]:
        raise CompactError(f"{path}: the manifest holds no bundle manifest")
    return manifest, arrays


def scale_steps(manifest: dict[str, Any], arrays: dict[str, np.ndarray],
                ) -> list[dict[int, np.ndarray]]:
    """The equalization / fill scale steps of a compact file (`read_compact`), in order:
    `replay` them onto the float parameters to get the float network the bundle rounds."""
    steps: list[dict[int, np.ndarray]] = [{} for _ in range(int(manifest["steps"]))]
    for name, a in arrays.items():
        if name.startswith("step"):
            k, i = name[4:].split(".l")
            steps[int(k)][int(i)] = a
    return steps


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The compact file's manifest; its "bundle" entry is the rebuilt bundle's manifest."""
    return read_compact(path)[0]


def unpack(path: str | Path, net: Network, weights: Sequence[ConvWeights],
           provenance: dict[str, Any]) -> Bundle:
    """Rebuild the bundle of a compact file on the float network (`sw.runtime.detect.
    load_network`: the parsed cfg, its Darknet weights and their provenance). CompactError
    unless the cfg and weights are those the bundle was made from and the rebuilt bundle
    has the recorded content hash."""
    path = Path(path)
    manifest, arrays = read_compact(path)
    bm = json.loads(json.dumps(manifest["bundle"]))
    made = bm.get("provenance", {})
    for key in ("cfg_sha256", "weights_sha256"):
        if made.get(key) and made[key] != provenance.get(key):
            raise CompactError(f"{path}: made from {key[:-7]} {made[key][:16]}..., not "
                               f"{str(provenance.get(key))[:16]}... ({provenance.get(key[:-7])})")
    if len(bm.get("layers", ())) != len(net.layers):
        raise CompactError(f"{path}: {len(bm.get('layers', ()))} layers, the network has "
                           f"{len(net.layers)}")
    try:
        params = replay(float_params(net, weights), network_kinds(net),
                        scale_steps(manifest, arrays))
        w_max = Numerics.from_dict(bm["numerics"]).weight_max
        out: dict[str, np.ndarray] = {}
        for i in conv_layers(bm):
            fw = arrays[f"l{i}.f_w"]
            base = floor_weights(params[i][0], fw)
            up = np.unpackbits(arrays[f"l{i}.up"], count=base.size).astype(np.int64)
            q = base.ravel() + up
            q[arrays[f"l{i}.fix_index"]] = arrays[f"l{i}.fix_value"]
            if np.abs(q).max(initial=0) > w_max:
                raise CompactError(f"{path}: layer {i}: weights beyond +-{w_max} after unpacking: "
                                   f"the float weights are not the ones it was packed on")
            out[f"l{i}.weight"] = q.reshape(base.shape).astype(np.int8)
            out[f"l{i}.bias"] = arrays[f"l{i}.bias"]
            out[f"l{i}.f_w"] = fw
    except CompactError:
        raise
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise CompactError(f"{path}: corrupt compact bundle ({type(e).__name__}: {e})") from e
    want = bm.pop("content_hash")
    try:
        bundle = Bundle(bm, out).seal()
    except BundleError as e:
        raise CompactError(f"{path}: the rebuilt bundle is invalid: {e}") from e
    if bundle.content_hash != want:
        raise CompactError(f"{path}: the rebuilt bundle's hash {bundle.content_hash[:16]}... is "
                           f"not the recorded {want[:16]}...: the file is corrupt, or this "
                           f"machine computes the float weights differently")
    return bundle
