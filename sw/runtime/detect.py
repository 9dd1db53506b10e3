"""Detection with a quantized bundle: the default bundle, and the backends that run one.

A `Backend` turns a letterboxed uint8 image into the detection heads (real values);
`Backend.detect` adds letterboxing, decoding and NMS. The runtime's backends execute a
bundle: "golden" (the NumPy integer model) and "sim" (the device through
`sw.runtime.device`: the Verilator simulator of the gateware, or a board on a serial
port). The float and fake-quant backends need torch and live in `sw.quant.pipeline`.
Nothing here imports torch or Amaranth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec import intmath
from hw.spec.config import HwConfig, Numerics
from sw.runtime import compact
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import (
    ConvWeights,
    DarknetError,
    Network,
    YoloHead,
    load_cfg,
    read_weights,
)
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import Detection, HeadSpec, Letterbox, detect, letterbox
from sw.runtime.scheduler import LayerStats
from sw.runtime.util import Progress, log, sha256_file
from sw.runtime.weights import cache_dir, default_cfg, fetch_weights

__all__ = ["BACKENDS", "CALIB_DIR", "Backend", "head_specs", "load_network", "make_backend",
           "shipped_bundle"]

ROOT = Path(__file__).resolve().parents[2]
#: The public-domain Darknet sample photos shipped in the repo: demo and calibration set.
CALIB_DIR = ROOT / "assets"
#: Every backend name the CLI offers ("float" and "fakequant" from `sw.quant.pipeline`).
BACKENDS = ("float", "fakequant", "golden", "sim")


def load_network(cfg: str | Path | None = None, weights: str | Path | None = None,
                 ) -> tuple[Network, list[ConvWeights], dict]:
    """A parsed cfg, its Darknet weights and their provenance (file names and SHA-256s);
    default: the pretrained Tiny-YOLOv3, fetched and verified on first use."""
    cfg_path = Path(cfg) if cfg else default_cfg()
    net = load_cfg(cfg_path)
    if net.width != net.height:
        raise DarknetError(f"{cfg_path}: [net] is {net.width} wide and {net.height} high: only "
                           "square inputs are supported (set width = height)")
    weights_path = Path(weights) if weights else fetch_weights()
    params = read_weights(weights_path, net)
    prov = {"cfg": cfg_path.name, "cfg_sha256": sha256_file(cfg_path),
            "weights": weights_path.name, "weights_sha256": sha256_file(weights_path)}
    return net, params, prov


def shipped_bundle(numerics: Numerics) -> Path | None:
    """The shipped default bundle (`compact.DEFAULT`, calibrated and AdaRound-tuned on
    COCO images) rebuilt on the fetched pretrained weights and cached; None when it was
    quantized for other number formats than `numerics` (a HwConfig or Numerics)."""
    made = compact.read_manifest(compact.DEFAULT)["bundle"]
    if made["numerics_id"] != numerics.numerics_id_hex:
        return None
    path = cache_dir() / "bundles" / f"yolov3-tiny-default-{made['content_hash'][:16]}.npz"
    if not path.exists():
        log(f"rebuilding the default bundle from {compact.DEFAULT.name} on the pretrained "
            f"weights into {path}")
        compact.unpack(compact.DEFAULT, *load_network()).save(path)
    return path


def head_specs(source: Network | Bundle) -> list[HeadSpec]:
    """The detection heads' decoding parameters of a parsed cfg or a bundle."""
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
    #: device backends: per image, the per-layer statistics of the run
    reports: list[list[LayerStats]] = field(default_factory=list)

    def detect(self, img: np.ndarray, conf: float = 0.25,
               nms: float = 0.45) -> tuple[list[Detection], Letterbox]:
        lb, box = letterbox(img, self.size)
        return detect(self.heads(lb), self.specs, box, conf, nms), box


def make_backend(name: str, bundle: Bundle, hw: HwConfig | None = None,
                 port: str | None = None) -> Backend:
    """A bundle's backend by name: "golden", or "sim" (the device through
    `sw.runtime.device`: the Verilator simulator of `hw`, or with `port` the board on that
    serial port, which must identify as `hw`). `hw` defaults to the default HwConfig."""
    size = bundle.input_shape[0]
    if name == "golden":
        golden = GoldenModel(bundle)
        return Backend("golden", size, head_specs(bundle),
                       lambda lb: golden.heads(intmath.quantize_input(lb)))
    if name == "sim":
        from sw.runtime import probe
        from sw.runtime.device import Device
        from sw.runtime.link import SerialLink, SimLink
        from sw.runtime.scheduler import run_network

        hw = hw or HwConfig()
        bundle.check_numerics(hw)
        link = SerialLink(port, hw.uart_baud) if port else SimLink(hw)
        try:
            probe.identify(link, hw)    # a few seconds, then an error that says why
        except BaseException:
            link.close()
            raise
        dev = Device(link, timeout=30.0)

        def run_dev(lb: np.ndarray) -> list[np.ndarray]:
            convs = sum(layer["kind"] == "conv" for layer in bundle.layers)
            with Progress(convs, f"{link.name}: layers", unit="layer") as bar:
                def step(msg: str) -> None:
                    log(msg, progress=True)
                    bar.update()
                res = run_network(dev, hw, bundle, intmath.quantize_input(lb), progress=step,
                                  fuse_pool=True)
            backend.reports.append(res.stats)
            return [res.outputs[i].astype(np.float64) * 2.0 ** -bundle.layers[i]["f_out"]
                    for i in bundle.head_indices]
        backend = Backend("board" if port else "sim", size, head_specs(bundle), run_dev)
        return backend
    raise ValueError(f"unknown backend {name!r} for a bundle (choose golden or sim; float "
                     "and fakequant: sw.quant.pipeline)")
