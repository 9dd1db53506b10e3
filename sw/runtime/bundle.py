"""The quantized weight bundle: one versioned, hashed file a backend executes.

Container: an uncompressed `.npz` (zip) with a JSON manifest stored as the array
``__manifest__`` and per conv layer ``l{i}.weight`` (int8, OHWI: out, kh, kw, in),
``l{i}.bias`` (int32, at scale 2**-(f_in + f_w[c])) and ``l{i}.f_w`` (int8, per output
channel weight fraction bits). The manifest holds the layer graph, every layer's output
fraction bits, the input scale, the number formats it was made for (`Numerics` and its
id: one bundle serves every hardware build that computes the same integers),
provenance, and a SHA-256 over the manifest and every array (``content_hash``).

Loading checks the container, the format version, the hash, the graph and every
array's shape, dtype and range, and (given a HwConfig or Numerics) the numerics id; any
failure is a `BundleError` naming the file and what is wrong. Saving writes a temporary
file and renames it, so a bundle is never half written.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hw.spec.config import ConfigError, Numerics
from sw.runtime.util import atomic_file

__all__ = ["FORMAT", "VERSION", "Bundle", "BundleError", "read_npz", "write_npz"]

FORMAT = "tinyyolo-fpga-bundle"
#: 2: the number formats ("numerics", "numerics_id") instead of the whole HwConfig.
VERSION = 2
_MANIFEST = "__manifest__"
_KINDS = ("conv", "maxpool", "upsample", "route", "yolo")


class BundleError(ValueError):
    """A bundle that is corrupt, truncated, malformed or made for other hardware."""


def _content_hash(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(path: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray],
              compressed: bool = False) -> Path:
    """Write a JSON manifest and arrays as one .npz atomically (temporary file, rename)."""
    path = Path(path)
    blob = json.dumps(manifest, sort_keys=True).encode()
    payload = {_MANIFEST: np.frombuffer(blob, np.uint8), **arrays}
    with atomic_file(path) as f:
        (np.savez_compressed if compressed else np.savez)(f, **payload)
    return path


def read_npz(path: Path, what: str, error: type[BundleError], fmt: str, version: int,
             hint: str = "") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest, arrays) of a file `write_npz` wrote with manifest "format" `fmt` and
    "version" `version`; `error` naming the file and `what` it should be if it cannot be
    read, is no such file, is corrupt or truncated, or has another format or version
    (`hint`: what to do then)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from e
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if _MANIFEST not in npz.files:
                raise error(f"{path}: not a {what} (no manifest)")
            arrays = {n: npz[n] for n in npz.files}
    except error:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise error(f"{path}: corrupt or truncated {what} ({e})") from e
    try:
        manifest = json.loads(arrays.pop(_MANIFEST).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: corrupt manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise error(f"{path}: not a {fmt} file")
    if manifest.get("version") != version:
        raise error(f"{path}: {what} format version {manifest.get('version')!r}, this "
                    f"software reads version {version}{hint}")
    return manifest, arrays


@dataclass
class Bundle:
    """A quantized network: manifest (graph, scales, number formats) and integer arrays."""

    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    # -- accessors --------------------------------------------------------------------
    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    @property
    def numerics(self) -> Numerics:
        """The number formats the bundle was quantized for."""
        return Numerics.from_dict(self.manifest["numerics"])

    @property
    def input_frac_bits(self) -> int:
        return self.manifest["input"]["frac_bits"]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["input"]["shape"])

    @property
    def head_indices(self) -> list[int]:
        return [i - 1 for i, layer in enumerate(self.layers) if layer["kind"] == "yolo"]

    def weight(self, i: int) -> np.ndarray:
        return self.arrays[f"l{i}.weight"]

    def bias(self, i: int) -> np.ndarray:
        return self.arrays[f"l{i}.bias"]

    def f_w(self, i: int) -> np.ndarray:
        return self.arrays[f"l{i}.f_w"].astype(np.int64)

    def shift(self, i: int) -> np.ndarray:
        """Per-output-channel requantizer shift f_in + f_w[c] - f_out (int64)."""
        layer = self.layers[i]
        return layer["f_in"] + self.f_w(i) - layer["f_out"]

    def inputs_of(self, i: int) -> list[int]:
        layer = self.layers[i]
        return list(layer["layers"]) if layer["kind"] == "route" else [i - 1]

    def in_frac_bits(self, i: int) -> int:
        src = self.inputs_of(i)[0]
        return self.input_frac_bits if src < 0 else self.layers[src]["f_out"]

    # -- persistence ------------------------------------------------------------------
    def seal(self) -> Bundle:
        """Fill in format, version and content hash, and validate."""
        self.manifest["format"] = FORMAT
        self.manifest["version"] = VERSION
        self.manifest["content_hash"] = _content_hash(self.manifest, self.arrays)
        self.validate("<new bundle>")
        return self

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def save(self, path: str | Path) -> Path:
        self.seal()
        return write_npz(path, self.manifest, self.arrays)

    @classmethod
    def load(cls, path: str | Path, expect: Numerics | None = None) -> Bundle:
        """Read, verify and validate a bundle; with `expect` (a HwConfig or Numerics) also
        refuse one quantized for other number formats."""
        path = Path(path)
        manifest, arrays = read_npz(path, "bundle", BundleError, FORMAT, VERSION,
                                    ": quantize the network again (python -m sw.quant.quantize)")
        digest = _content_hash(manifest, arrays)
        if digest != manifest.get("content_hash"):
            raise BundleError(f"{path}: content hash mismatch (stored "
                              f"{str(manifest.get('content_hash'))[:16]}..., computed "
                              f"{digest[:16]}...): the bundle is corrupt")
        bundle = cls(manifest, arrays)
        bundle.validate(str(path))
        if expect is not None:
            bundle.check_numerics(expect, str(path))
        return bundle

    def check_numerics(self, cfg: Numerics, where: str = "bundle") -> None:
        """BundleError unless `cfg` (a HwConfig or Numerics) has the bundle's numerics id."""
        have = self.manifest["numerics_id"]
        if have != cfg.numerics_id_hex:
            raise BundleError(f"{where}: made for numerics {have} ({self.numerics}), the "
                              f"hardware computes with {cfg.numerics_id_hex} ({cfg.numerics}): "
                              "quantize the network again for this config")

    # -- validation -------------------------------------------------------------------
    def validate(self, where: str) -> None:
        """Check graph, scales and arrays against the bundle's own number formats."""
        try:
            self._validate(where)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise BundleError(f"{where}: malformed manifest ({type(e).__name__}: {e})") from e

    def _validate(self, where: str) -> None:
        def fail(msg: str) -> BundleError:
            return BundleError(f"{where}: {msg}")

        m = self.manifest
        for key in ("layers", "input", "numerics", "numerics_id"):
            if key not in m:
                raise fail(f"manifest lacks '{key}'")
        try:
            cfg = Numerics.from_dict(m["numerics"])
        except (ConfigError, TypeError) as e:
            raise fail(f"bad numerics: {e}") from e
        if cfg.numerics_id_hex != m["numerics_id"]:
            raise fail("numerics do not match numerics_id")
        shapes: list[tuple[int, int, int]] = []
        expected_arrays: set[str] = set()
        for i, layer in enumerate(self.layers):
            kind = layer.get("kind")
            if kind not in _KINDS:
                raise fail(f"layer {i}: unknown kind {kind!r}")
            src = self.inputs_of(i)
            if any(not -1 <= j < i for j in src) or (kind == "route" and -1 in src):
                raise fail(f"layer {i}: inputs {src} out of range")
            if any(j >= 0 and self.layers[j]["kind"] == "yolo" for j in src):
                raise fail(f"layer {i}: reads a detection layer")
            ins = [tuple(self.input_shape) if j < 0 else shapes[j] for j in src]
            fin = {self.input_frac_bits if j < 0 else self.layers[j]["f_out"] for j in src}
            if len(fin) != 1:
                raise fail(f"layer {i}: route inputs have different scales {sorted(fin)}")
            if kind != "yolo" and layer.get("f_out") != (next(iter(fin)) if kind != "conv"
                                                         else layer.get("f_out")):
                raise fail(f"layer {i}: {kind} must keep its input's scale")
            if list(layer.get("shape", [])) != list(self._shape(i, layer, ins)):
                raise fail(f"layer {i}: shape {layer.get('shape')} inconsistent with its inputs")
            shapes.append(tuple(layer["shape"]))
            if kind == "conv":
                expected_arrays |= {f"l{i}.weight", f"l{i}.bias", f"l{i}.f_w"}
                feeds_head = i + 1 < len(self.layers) and self.layers[i + 1]["kind"] == "yolo"
                if bool(layer.get("head")) != feeds_head:
                    raise fail(f"layer {i}: head={layer.get('head')!r}, but it "
                               f"{'feeds' if feeds_head else 'does not feed'} a detection layer")
                self._check_conv(i, layer, ins[0], next(iter(fin)), cfg, fail)
            elif kind == "yolo":
                self._check_detection(i, layer, ins[0][2], fail)
        extra = set(self.arrays) - expected_arrays
        if extra:
            raise fail(f"unexpected arrays {sorted(extra)[:5]}")

    @staticmethod
    def _shape(i: int, layer: dict, ins: list[tuple[int, int, int]]) -> tuple[int, int, int]:
        h, w, c = ins[0]
        kind = layer["kind"]
        if kind == "conv":
            k, s, p = layer["size"], layer["stride"], layer["pad"]
            return ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, layer["filters"])
        if kind == "maxpool":
            k, s, p = layer["size"], layer["stride"], layer["padding"]
            return ((h + p - k) // s + 1, (w + p - k) // s + 1, c)
        if kind == "upsample":
            return (h * layer["stride"], w * layer["stride"], c)
        if kind == "route":
            if any(x[:2] != (h, w) for x in ins):
                return (-1, -1, -1)
            return (h, w, sum(x[2] for x in ins))
        return (h, w, c)

    def _check_detection(self, i: int, layer: dict, channels: int, fail: Any) -> None:
        """A [yolo] / [region] layer: positive anchor pairs, a class count, and a head conv
        before it with anchors x (5 + classes) channels."""
        anchors, classes = layer.get("anchors"), layer.get("classes")
        if type(classes) is not int or classes < 1:
            raise fail(f"layer {i}: classes must be a positive integer, got {classes!r}")
        if not isinstance(layer.get("region"), bool):
            raise fail(f"layer {i}: region must be true or false, got {layer.get('region')!r}")
        if not isinstance(anchors, list) or not anchors or not all(
                isinstance(a, list) and len(a) == 2 and all(
                    type(v) in (int, float) and math.isfinite(v) and v > 0 for v in a)
                for a in anchors):
            raise fail(f"layer {i}: anchors must be a list of positive (w, h) pairs")
        if i == 0 or self.layers[i - 1]["kind"] != "conv":
            raise fail(f"layer {i}: a detection layer must follow a conv layer")
        want = len(anchors) * (5 + classes)
        if channels != want:
            raise fail(f"layer {i}: {len(anchors)} anchors x (5 + {classes} classes) need "
                       f"{want} channels, the head conv gives {channels}")

    def _check_conv(self, i: int, layer: dict, in_shape: tuple[int, int, int], f_in: int,
                    cfg: Numerics, fail: Any) -> None:
        if layer.get("f_in") != f_in:
            raise fail(f"layer {i}: f_in {layer.get('f_in')} != its input's scale {f_in}")
        try:
            w, b, fw = (self.arrays[f"l{i}.{n}"] for n in ("weight", "bias", "f_w"))
        except KeyError as e:
            raise fail(f"layer {i}: missing array {e}") from None
        k, cout, cin = layer["size"], layer["filters"], in_shape[2]
        if w.dtype != np.int8 or w.shape != (cout, k, k, cin):
            raise fail(f"layer {i}: weight must be int8 {(cout, k, k, cin)}, "
                       f"got {w.dtype} {w.shape}")
        if b.dtype != np.int32 or b.shape != (cout,) or fw.dtype != np.int8 or fw.shape != (cout,):
            raise fail(f"layer {i}: bias must be int32 and f_w int8, both ({cout},)")
        if (w == -128).any():
            raise fail(f"layer {i}: weights must be symmetric (no -128)")
        if np.abs(b.astype(np.int64)).max() > cfg.bias_limit:
            raise fail(f"layer {i}: bias exceeds the accumulator bound {cfg.bias_limit}")
        if k * k * cin > cfg.max_dot_terms:
            raise fail(f"layer {i}: {k * k * cin} terms per output can overflow acc_bits")
        if layer["activation"] not in ("leaky", "linear"):
            raise fail(f"layer {i}: activation {layer['activation']!r}")
        want_bits = cfg.head_bits if layer.get("head") else cfg.act_bits
        if layer.get("out_bits") != want_bits:
            raise fail(f"layer {i}: out_bits {layer.get('out_bits')} != {want_bits} of the config")
        s = self.shift(i)
        if s.min() < 0 or s.max() > cfg.max_shift:
            raise fail(f"layer {i}: shifts {s.min()}..{s.max()} outside 0..{cfg.max_shift}")
