"""Detect objects in images: `python sw/host.py --image dog.jpg`.

Backends: `golden` (the NumPy integer model, bit-exact to the hardware), `fakequant`
(the PyTorch fake-quant model, same integers), `float` (the float network), `sim` (the
device through sw/runtime/device.py: the Verilator simulator of the gateware, or with `--port`
the board on a serial port).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
import types
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw.spec.config import ConfigError, HwConfig, load_config
from hw.spec.engine import PassError
from sw.runtime import detect
from sw.runtime.bundle import VERSION as BUNDLE_VERSION
from sw.runtime.bundle import Bundle, BundleError
from sw.runtime.darknet import DarknetError
from sw.runtime.detect import BACKENDS, CALIB_DIR, Backend
from sw.runtime.device import DeviceError
from sw.runtime.link import LinkError
from sw.runtime.postprocess import (
    ImageError,
    class_names,
    draw_detections,
    load_image,
    save_image_atomic,
    to_coco_results,
)
from sw.runtime.util import image_files, log, sha256_file, write_json_atomic
from sw.runtime.weights import WeightsError, cache_dir, default_cfg, fetch_weights

EXAMPLES = """examples:
  python sw/host.py --image dog.jpg                      # bundled sample, simulated RTL
  python sw/host.py --image dog.jpg --port /dev/ttyUSB1  # on the board
  python sw/host.py --image photos/ --out results/ --backend golden  # golden model, a folder
  python sw/host.py --image dog.jpg --backend float      # the float network, for comparison
  python sw/host.py --image x.jpg --cfg my.cfg --weights my.weights
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sw/host.py", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image", required=True, help="an image file or a folder of images")
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="what runs the network (default: sim, the simulated RTL, or the "
                        "board with --port)")
    p.add_argument("--cfg", help="Darknet cfg (default: the pretrained Tiny-YOLOv3 cfg)")
    p.add_argument("--weights", help="Darknet weights (default: fetched pretrained weights)")
    p.add_argument("--bundle", help="quantized bundle (default: built from cfg/weights)")
    p.add_argument("--hw-config", help="HwConfig JSON (default: the default build)")
    p.add_argument("--port", help="with --backend sim: the board's serial port (default: "
                                  "the Verilator simulator)")
    p.add_argument("--calib", help="calibrate a bundle on this folder of images (default: the "
                                   "shipped default bundle, or for other cfg / weights / "
                                   f"HwConfig a bundle calibrated on {CALIB_DIR.name}/)")
    p.add_argument("--out", help="folder for annotated images and detections.json")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    args = p.parse_args(argv)
    if not 0 <= args.conf < 1 or not 0 < args.nms <= 1:
        p.error("--conf must lie in [0, 1) and --nms in (0, 1]")
    if args.port and args.backend != "sim":
        p.error("--port needs --backend sim")
    return args


def resolve_images(arg: str) -> list[Path]:
    path = Path(arg)
    if not path.exists() and not path.is_absolute() and (CALIB_DIR / path).exists():
        log(f"{arg} not found here; using the bundled sample {CALIB_DIR / path}")
        path = CALIB_DIR / path
    if not path.exists():
        raise ImageError(f"{arg}: no such file or folder")
    return image_files(path)


def get_bundle(args: argparse.Namespace, hw: HwConfig) -> Bundle:
    """The bundle to run: --bundle; else the shipped default bundle where its number
    formats are the config's; else one calibrated from cfg / weights / calib and cached
    under a key of everything that decides it (the quantizer and bundle versions and
    options, the cfg, weights and calibration images' contents, the number formats)."""
    if args.bundle:
        return Bundle.load(args.bundle, expect=hw)
    custom = args.cfg or args.weights or args.calib
    if not custom and (path := detect.shipped_bundle(hw)) is not None:
        return Bundle.load(path, expect=hw)
    pipeline = _quant_pipeline("quantizing a bundle (--cfg, --weights, --calib, or "
                               "number formats the shipped bundle was not made for)")
    from sw.quant.ptq import QUANTIZER_VERSION, QuantOptions

    if not custom:
        return Bundle.load(pipeline.default_bundle(hw), expect=hw)
    cfg = Path(args.cfg) if args.cfg else default_cfg()
    weights = Path(args.weights) if args.weights else fetch_weights()
    calib = args.calib or CALIB_DIR
    h = hashlib.sha256(f"quantizer {QUANTIZER_VERSION} bundle {BUNDLE_VERSION} "
                       f"{QuantOptions().tag} numerics {hw.numerics_id_hex}".encode())
    try:
        for f in (cfg, weights, *image_files(calib)):
            h.update(f"\0{f.name}\0{sha256_file(f)}".encode())
    except OSError as e:
        raise DarknetError(f"{e.filename}: cannot read: {e.strerror}") from e
    path = cache_dir() / "bundles" / f"custom-{h.hexdigest()[:16]}.npz"
    if not path.exists():
        pipeline.build_bundle(path, cfg, weights, calib, hw)
    return Bundle.load(path, expect=hw)


class MissingDependency(RuntimeError):
    """A package the requested work needs is not installed."""


def _quant_pipeline(why: str) -> types.ModuleType:
    """sw.quant.pipeline, which needs torch: imported only for `why`."""
    try:
        from sw.quant import pipeline
    except ImportError as e:
        raise MissingDependency(f"{why} needs PyTorch ({e}); install the project's "
                                "environment (make setup), or use --backend golden or sim "
                                "with the default bundle or --bundle") from e
    return pipeline


def make_backend(args: argparse.Namespace, hw: HwConfig) -> Backend:
    """The backend the arguments ask for; torch is imported only for float and fakequant."""
    if args.backend == "float":
        pipeline = _quant_pipeline("--backend float")
        net, model, _ = pipeline.load_float(args.cfg, args.weights)
        return pipeline.make_backend("float", net=net, model=model)
    bundle = get_bundle(args, hw)
    if args.backend == "fakequant":
        return _quant_pipeline("--backend fakequant").make_backend("fakequant", bundle)
    return detect.make_backend(args.backend, bundle, hw, args.port)


def run(args: argparse.Namespace) -> int:
    hw = load_config(args.hw_config)
    images = resolve_images(args.image)
    backend = make_backend(args, hw)
    out = Path(args.out) if args.out else None
    staging = None
    if out:  # annotated images go to a staging folder, moved into place at the end
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        return _detect_all(images, backend, args, out, staging)
    finally:
        if staging:
            shutil.rmtree(staging, ignore_errors=True)


def _detect_all(images: list[Path], backend: Backend, args: argparse.Namespace, out: Path | None,
                staging: Path | None) -> int:
    names = class_names()
    results, annotated = [], []
    t_total = time.time()
    for n, path in enumerate(images, 1):
        img = load_image(path)
        t0 = time.time()
        dets, _ = backend.detect(img, args.conf, args.nms)
        prefix = f"[{n}/{len(images)}] " if len(images) > 1 else ""
        print(f"{prefix}{path.name}: {len(dets)} objects ({backend.name}, "
              f"{time.time() - t0:.2f} s)")
        for d in dets:
            x, y, w, h = d.bbox
            print(f"  {names[d.class_id]:<14} {d.score:5.3f}  "
                  f"x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}")
        results += to_coco_results(dets, path.name)
        if out:
            tmp = staging / f"{path.stem}.png"
            save_image_atomic(draw_detections(img, dets, names), tmp)
            annotated.append(tmp)
    if out:
        for tmp in annotated:
            os.replace(tmp, out / tmp.name)
        write_json_atomic(results, out / "detections.json")
        if backend.reports:
            write_json_atomic([{"file_name": p.name, "layers": [asdict(s) for s in rep]}
                               for p, rep in zip(images, backend.reports, strict=True)],
                              out / "layer_report.json")
        print(f"wrote {len(annotated)} annotated image(s) and {out / 'detections.json'} "
              f"({len(results)} detections, {time.time() - t_total:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ImageError, DarknetError, BundleError, ConfigError, WeightsError,
            FileNotFoundError, LinkError, DeviceError, PassError, MissingDependency) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
