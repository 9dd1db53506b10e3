"""Glue shared by the CLI, the evaluation and the tests.

Loads the float network, builds (and caches) the default quantized bundle, and runs an
image through a backend ("float", "fakequant", "golden") to detections.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hw.config import HwConfig
from sw import intmath
from sw.bundle import Bundle
from sw.darknet import Network, YoloHead, load_cfg, read_weights
from sw.golden import GoldenModel
from sw.model import FakeQuantModel, FloatModel
from sw.postprocess import Detection, HeadSpec, Letterbox, detect, letterbox, load_image
from sw.quant import QUANTIZER_VERSION, QuantOptions, calibrate, file_sha256, quantize_network
from sw.weights import cache_dir, default_cfg, fetch_weights

__all__ = [
    "CALIB_DIR",
    "Backend",
    "build_bundle",
    "default_bundle",
    "head_specs",
    "image_files",
    "load_float",
    "make_backend",
]

ROOT = Path(__file__).resolve().parent.parent
#: The public-domain Darknet sample photos shipped in the repo: demo and calibration set.
CALIB_DIR = ROOT / "assets"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
BACKENDS = ("float", "fakequant", "golden", "sim")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def image_files(path: str | Path) -> list[Path]:
    """An image file, or the images in a folder (sorted)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
        return files
    return [p]


def load_float(cfg: str | Path | None = None,
               weights: str | Path | None = None) -> tuple[Network, FloatModel, dict]:
    """The float network from a cfg and weights (default: the pretrained Tiny-YOLOv3)."""
    cfg_path = Path(cfg) if cfg else default_cfg()
    net = load_cfg(cfg_path)
    weights_path = Path(weights) if weights else fetch_weights()
    model = FloatModel(net, read_weights(weights_path, net)).eval()
    prov = {"cfg": cfg_path.name, "cfg_sha256": file_sha256(cfg_path),
            "weights": weights_path.name, "weights_sha256": file_sha256(weights_path)}
    return net, model, prov


def letterboxed(paths: Sequence[Path], size: int) -> list[np.ndarray]:
    return [letterbox(load_image(p), size)[0] for p in paths]


def build_bundle(out: Path, cfg: str | Path | None = None, weights: str | Path | None = None,
                 calib: str | Path | Sequence[Path] = CALIB_DIR, hw: HwConfig | None = None,
                 opts: QuantOptions = QuantOptions()) -> Bundle:
    """Calibrate on a folder of images (or a list of image files), quantize, and save a
    bundle to `out`."""
    hw = hw or HwConfig()
    net, model, prov = load_float(cfg, weights)
    if net.width != net.height:
        raise ValueError("only square network inputs are supported")
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
        f"hash {bundle.content_hash[:12]}, HwConfig {hw.config_id_hex})")
    return bundle


def default_bundle_path(hw: HwConfig, opts: QuantOptions = QuantOptions()) -> Path:
    name = f"yolov3-tiny-{opts.tag}-q{QUANTIZER_VERSION}-{hw.config_id_hex}.npz"
    return cache_dir() / "bundles" / name


def default_bundle(hw: HwConfig | None = None) -> Path:
    """The pretrained network's default bundle, built on first use and cached.

    For the default HwConfig it is the shipped compact bundle (`sw.compact.DEFAULT`:
    calibrated and AdaRound-tuned on COCO images) rebuilt on the fetched weights; for any
    other HwConfig, a plain PTQ bundle calibrated on the sample photos in `assets/`."""
    from sw import compact

    hw = hw or HwConfig()
    made = compact.read_manifest(compact.DEFAULT)["bundle"]
    if made["hw_config_id"] != hw.config_id_hex:
        path = default_bundle_path(hw)
        if not path.exists():
            log(f"the shipped default bundle is for HwConfig {made['hw_config_id']}: "
                f"calibrating one for {hw.config_id_hex} on {CALIB_DIR} into {path}")
            build_bundle(path, hw=hw)
        return path
    path = cache_dir() / "bundles" / f"yolov3-tiny-default-{made['content_hash'][:16]}.npz"
    if not path.exists():
        log(f"rebuilding the default bundle from {compact.DEFAULT.name} on the pretrained "
            f"weights into {path}")
        net, model, prov = load_float()
        compact.unpack(compact.DEFAULT, net, model, prov).save(path)
    return path


def head_specs(source: Network | Bundle) -> list[HeadSpec]:
    if isinstance(source, Bundle):
        return [HeadSpec("region" if y["region"] else "yolo",
                         tuple(tuple(a) for a in y["anchors"]), y["classes"])
                for y in source.layers if y["kind"] == "yolo"]
    return [HeadSpec("region" if y.region else "yolo", y.anchors, y.classes)
            for y in source.layers if isinstance(y, YoloHead)]


@dataclass
class Backend:
    """Turns a letterboxed uint8 image into real-valued HWC head outputs."""

    name: str
    size: int
    specs: list[HeadSpec]
    heads: Callable[[np.ndarray], list[np.ndarray]]
    #: device backends: per image, the per-layer statistics of the run (sw.driver.LayerStats)
    reports: list = field(default_factory=list)

    def detect(self, img: np.ndarray, conf: float = 0.25,
               nms: float = 0.45) -> tuple[list[Detection], Letterbox]:
        lb, box = letterbox(img, self.size)
        return detect(self.heads(lb), self.specs, box, conf, nms), box


def float_heads(model: FloatModel) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(lb: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(lb).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            return [h[0].permute(1, 2, 0).double().numpy() for h in model.heads(x)]
    return run


def make_backend(name: str, bundle: Bundle | None = None, model: FloatModel | None = None,
                 net: Network | None = None, port: str | None = None) -> Backend:
    """A backend by name; "float" needs (net, model), the others a bundle. "sim" runs the
    bundle on the device through sw/driver.py: the Verilator simulator, or the board on
    serial `port`."""
    if name == "float":
        return Backend("float", net.width, head_specs(net), float_heads(model))
    if bundle is None:
        raise ValueError(f"backend {name!r} needs a bundle")
    size = bundle.input_shape[0]
    if name == "golden":
        golden = GoldenModel(bundle)
        return Backend("golden", size, head_specs(bundle),
                       lambda lb: golden.heads(intmath.quantize_input(lb)))
    if name == "fakequant":
        fq = FakeQuantModel(bundle)

        def run(lb: np.ndarray) -> list[np.ndarray]:
            outs = fq(intmath.quantize_input(lb))
            return [outs[i][0].permute(1, 2, 0).numpy() for i in bundle.head_indices]
        return Backend("fakequant", size, head_specs(bundle), run)
    if name == "sim":
        from sw.driver import Device, SerialLink, SimLink

        hw = bundle.config
        link = SerialLink(port, hw.uart_baud) if port else SimLink(hw)
        dev = Device(link, timeout=30.0)
        dev.identify(expect=hw)

        def run_dev(lb: np.ndarray) -> list[np.ndarray]:
            res = dev.run_network(bundle, intmath.quantize_input(lb), progress=log,
                                  fuse_pool=True)
            backend.reports.append(res.stats)
            return [res.outputs[i].astype(np.float64) * 2.0 ** -bundle.layers[i]["f_out"]
                    for i in bundle.head_indices]
        backend = Backend("board" if port else "sim", size, head_specs(bundle), run_dev)
        return backend
    raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
