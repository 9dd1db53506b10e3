"""The float network and bundles made from it (torch): what the CLI, the evaluation and the
tests use when the shipped default bundle is not enough.

`load_float` builds the PyTorch float model; `build_bundle` calibrates and quantizes
one; `default_bundle` is the shipped bundle where the number formats match, else a plain
PTQ bundle calibrated on the sample photos and cached; `make_backend` adds the "float"
and "fakequant" backends to the runtime's golden and sim ones (`sw.runtime.detect`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hw.spec import intmath
from hw.spec.config import HwConfig, Numerics
from sw.quant.calib import calibrate
from sw.quant.model import FakeQuantModel, FloatModel, float_heads
from sw.quant.ptq import QUANTIZER_VERSION, QuantOptions, check_network, quantize_network
from sw.runtime import detect
from sw.runtime.bundle import VERSION as BUNDLE_VERSION
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import Network
from sw.runtime.detect import CALIB_DIR, Backend, head_specs, load_network
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.util import image_files, log, progress, sha256_file
from sw.runtime.weights import WEIGHTS_SHA256, cache_dir, default_cfg

__all__ = ["build_bundle", "bundle_cache_path", "calibrated_bundle_path", "default_bundle",
           "load_float", "make_backend"]


def load_float(cfg: str | Path | None = None,
               weights: str | Path | None = None) -> tuple[Network, FloatModel, dict]:
    """The float network from a cfg and weights (default: the pretrained Tiny-YOLOv3) and
    their provenance (`sw.runtime.detect.load_network`)."""
    net, params, prov = load_network(cfg, weights)
    return net, FloatModel(net, params).eval(), prov


def build_bundle(out: Path, cfg: str | Path | None = None, weights: str | Path | None = None,
                 calib: str | Path | Sequence[Path] = CALIB_DIR, hw: HwConfig | None = None,
                 opts: QuantOptions = QuantOptions()) -> Bundle:
    """Calibrate on a folder of images (or a list of image files), quantize, and save a
    bundle to `out`."""
    hw = hw or HwConfig()
    net, model, prov = load_float(cfg, weights)
    check_network(net, hw)              # before calibrating: minutes on a large folder
    if isinstance(calib, str | Path):
        files, where = image_files(calib), calib
    else:
        files, where = list(calib), "a list"
    log(f"calibrating on {len(files)} images from {where} ...")
    t0 = time.time()
    cal = calibrate(model, (letterbox(load_image(p), net.width)[0]
                            for p in progress(files, "calibrating", unit="image")))
    prov["calibration"] = [p.name for p in files]
    bundle = quantize_network(net, model, cal, hw, opts, prov)
    bundle.save(out)
    log(f"bundle written to {out} ({time.time() - t0:.1f} s, "
        f"hash {bundle.content_hash[:12]}, numerics {hw.numerics_id_hex})")
    return bundle


#: The pretrained weights as a cache-key input: their verified SHA-256, without fetching.
PRETRAINED = ("yolov3-tiny.weights", WEIGHTS_SHA256)


def bundle_cache_path(kind: str, numerics: Numerics, cfg: Path, weights: Path | tuple[str, str],
                      calib: Sequence[Path], opts: QuantOptions = QuantOptions()) -> Path:
    """Where a built bundle is cached: bundles/<kind>-<numerics id>-<key>.npz in the cache
    folder, the key a hash of everything that decides the bundle: the quantizer and bundle
    format versions, every quantizer option, the number formats, and the names and
    contents of the cfg, the weights (a file, or `PRETRAINED`) and the calibration images
    (in order)."""
    h = hashlib.sha256(json.dumps({
        "quantizer": QUANTIZER_VERSION, "bundle": BUNDLE_VERSION, "options": asdict(opts),
        "numerics": numerics.numerics.to_dict()}, sort_keys=True).encode())
    for f in (cfg, weights, *calib):
        try:
            name, digest = f if isinstance(f, tuple) else (Path(f).name, sha256_file(f))
        except OSError as e:
            raise OSError(e.errno, f"cannot read: {e.strerror}", str(f)) from e
        h.update(f"\0{name}\0{digest}".encode())
    return (cache_dir() / "bundles" /
            f"{kind}-{numerics.numerics_id_hex}-{h.hexdigest()[:16]}.npz")


def calibrated_bundle_path(hw: HwConfig, opts: QuantOptions = QuantOptions()) -> Path:
    """Where `default_bundle` caches a PTQ bundle of the pretrained network calibrated on
    `CALIB_DIR` (`bundle_cache_path`)."""
    return bundle_cache_path(f"yolov3-tiny-{opts.tag}", hw, default_cfg(), PRETRAINED,
                             image_files(CALIB_DIR), opts)


def default_bundle(hw: HwConfig | None = None) -> Path:
    """The pretrained network's default bundle for `hw`'s number formats: the shipped one
    (`sw.runtime.detect.shipped_bundle`), or for other formats a plain PTQ bundle
    calibrated on the sample photos in `assets/`, built on first use and cached."""
    hw = hw or HwConfig()
    shipped = detect.shipped_bundle(hw)
    if shipped is not None:
        return shipped
    path = calibrated_bundle_path(hw)
    if not path.exists():
        log(f"the shipped default bundle is for other number formats: calibrating one for "
            f"numerics {hw.numerics_id_hex} on {CALIB_DIR} into {path}")
        build_bundle(path, hw=hw)
    return path


def make_backend(name: str, bundle: Bundle | None = None, model: FloatModel | None = None,
                 net: Network | None = None, hw: HwConfig | None = None,
                 port: str | None = None) -> Backend:
    """A backend by name: "float" needs (net, model), "fakequant" a bundle (the PyTorch
    model of the same integers); "golden" and "sim" are `sw.runtime.detect.make_backend`."""
    if name == "float":
        return Backend("float", net.width, head_specs(net), float_heads(model))
    if bundle is None:
        raise ValueError(f"backend {name!r} needs a bundle")
    if name == "fakequant":
        fq = FakeQuantModel(bundle)

        def run(lb: np.ndarray) -> list[np.ndarray]:
            outs = fq(intmath.quantize_input(lb))
            return [outs[i][0].permute(1, 2, 0).numpy() for i in bundle.head_indices]
        return Backend("fakequant", bundle.input_shape[0], head_specs(bundle), run)
    return detect.make_backend(name, bundle, hw, port)
