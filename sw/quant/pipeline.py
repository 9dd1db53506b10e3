"""The float network and bundles made from it (torch): what the CLI, the evaluation and the
tests use when the shipped default bundle is not enough.

`load_float` builds the PyTorch float model; `build_bundle` calibrates and quantizes
one; `default_bundle` is the shipped bundle where the number formats match, else a plain
PTQ bundle calibrated on the sample photos and cached; `make_backend` adds the "float"
and "fakequant" backends to the runtime's golden and sim ones (`sw.runtime.detect`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hw.spec import intmath
from hw.spec.config import HwConfig
from sw.quant.calib import calibrate
from sw.quant.model import FakeQuantModel, FloatModel, float_heads
from sw.quant.ptq import QUANTIZER_VERSION, QuantOptions, quantize_network
from sw.runtime import detect
from sw.runtime.bundle import VERSION as BUNDLE_VERSION
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import DarknetError, Network
from sw.runtime.detect import CALIB_DIR, Backend, head_specs, load_network
from sw.runtime.postprocess import letterbox, load_image
from sw.runtime.util import image_files, log
from sw.runtime.weights import cache_dir

__all__ = ["build_bundle", "calibrated_bundle_path", "default_bundle", "load_float",
           "make_backend"]


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
    if net.width != net.height:
        raise DarknetError(f"only square network inputs are supported, the cfg's [net] is "
                         f"{net.width}x{net.height}")
    if isinstance(calib, str | Path):
        files, where = image_files(calib), calib
    else:
        files, where = list(calib), "a list"
    log(f"calibrating on {len(files)} images from {where} ...")
    t0 = time.time()
    cal = calibrate(model, (letterbox(load_image(p), net.width)[0] for p in files),
                    progress=lambda n: log(f"  calibration image {n}/{len(files)}"))
    prov["calibration"] = [p.name for p in files]
    bundle = quantize_network(net, model, cal, hw, opts, prov)
    bundle.save(out)
    log(f"bundle written to {out} ({time.time() - t0:.1f} s, "
        f"hash {bundle.content_hash[:12]}, numerics {hw.numerics_id_hex})")
    return bundle


def calibrated_bundle_path(hw: HwConfig, opts: QuantOptions = QuantOptions()) -> Path:
    """Where `default_bundle` caches a PTQ bundle calibrated on `CALIB_DIR`."""
    name = (f"yolov3-tiny-{opts.tag}-q{QUANTIZER_VERSION}-b{BUNDLE_VERSION}-"
            f"{hw.numerics_id_hex}.npz")
    return cache_dir() / "bundles" / name


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
