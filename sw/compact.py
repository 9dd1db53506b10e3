"""Compact bundles: a bundle kept as one rounding bit per weight against the float weights.

Every integer weight q of a power-of-two bundle, rounded to nearest or learned
(`sw.adaround`), is floor(w 2**f_w) or floor(w 2**f_w) + 1 of its float weight w. Given
the float model the bundle rounds (the Darknet weights with BN fused, then the bundle's
equalization / grid-fill scale steps, `sw.tune.transform`), one bit per weight rebuilds
it exactly. A compact file holds those bits (packed), the exceptions (weights saturated
at the int8 range), the scale steps, every other array of the bundle (biases, f_w) and
the bundle's whole manifest, so that the rebuilt bundle carries the same content hash;
unpacking checks that hash and refuses any difference.

That is how the default bundle ships (`DEFAULT`, 1.1 MB instead of 8.9 MB): it is
calibrated and AdaRound-tuned on COCO images that may not be redistributed, and what
those images decided (scales, rounding, biases) fits in the compact file.

    python -m sw.compact make --images coco-train128/images   # DEFAULT: make default-bundle
    python -m sw.compact pack --bundle B.npz [--calib DIR] --out C.npz
    python -m sw.compact unpack --compact C.npz --out B.npz
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw.config import HwConfig
from sw import tune
from sw.bundle import Bundle, BundleError, read_npz, write_npz
from sw.darknet import Network
from sw.model import FloatModel

__all__ = ["DEFAULT", "DEFAULT_RECIPE", "FORMAT", "VERSION", "CompactError", "pack",
           "read_manifest", "save", "unpack"]

FORMAT = "tinyyolo-fpga-compact"
VERSION = 1
#: The shipped default bundle (see README, "The default bundle").
DEFAULT = Path(__file__).resolve().parent / "data" / "yolov3-tiny-default.npz"
#: How `make` builds it: PTQ variant tag, calibration/AdaRound images (first K, sorted),
#: AdaRound on `views` views of each (the image, its mirror, crops seeded by view_seed).
DEFAULT_RECIPE = {"tag": "channel-mse-bc-eq0.5-fill", "first": 64, "views": 4, "view_seed": 123}
#: A rounding of the float model has exceptions only where the int8 range saturates.
_MAX_EXCEPTIONS = 1e-3


class CompactError(BundleError):
    """A compact bundle that is corrupt, or does not fit the float weights it is unpacked on."""


def _floor(w: np.ndarray, fw: np.ndarray) -> np.ndarray:
    """floor(w 2**f_w) of OIHW float weights, in the bundle's OHWI order (int64)."""
    x = np.asarray(w, np.float64) * np.exp2(fw.astype(np.float64))[:, None, None, None]
    return np.floor(x).transpose(0, 2, 3, 1).astype(np.int64)


def _replay(model: FloatModel, steps: Sequence[dict[int, np.ndarray]]) -> FloatModel:
    for step in steps:
        model = tune.equalize(model, step)
    return model


def _convs(manifest: dict[str, Any]) -> list[int]:
    return [i for i, layer in enumerate(manifest["layers"]) if layer["kind"] == "conv"]


def pack(bundle: Bundle, model: FloatModel, steps: Sequence[dict[int, np.ndarray]] = (),
         ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The compact form (manifest, arrays) of `bundle`, a rounding of `model` transformed by
    the scale `steps`. CompactError if the bundle is not such a rounding."""
    params = _replay(model, steps).fused_params()
    arrays: dict[str, np.ndarray] = {}
    total = exceptions = 0
    for i in _convs(bundle.manifest):
        if i not in params:
            raise CompactError(f"layer {i}: the float model has no such conv")
        q = bundle.weight(i).astype(np.int64)
        base = _floor(params[i][0], bundle.f_w(i))
        if base.shape != q.shape:
            raise CompactError(f"layer {i}: bundle weights {q.shape} vs float {base.shape}")
        d = (q - base).ravel()
        fix = np.flatnonzero((d != 0) & (d != 1))
        arrays[f"l{i}.up"] = np.packbits(d == 1)
        arrays[f"l{i}.fix_index"] = fix.astype(np.int64)
        arrays[f"l{i}.fix_value"] = q.ravel()[fix].astype(np.int8)
        for name in ("bias", "f_w"):
            arrays[f"l{i}.{name}"] = bundle.arrays[f"l{i}.{name}"]
        total += d.size
        exceptions += fix.size
    if exceptions > _MAX_EXCEPTIONS * total:
        raise CompactError(f"{exceptions} of {total} weights are not floor or floor + 1 of the "
                           f"float weights: the bundle does not round this float model (an "
                           f"equalized bundle needs its calibration images)")
    for k, step in enumerate(steps):
        for i, s in step.items():
            arrays[f"step{k}.l{i}"] = np.asarray(s, np.float64)
    manifest = {"format": FORMAT, "version": VERSION, "steps": len(steps),
                "weights": total, "exceptions": exceptions, "bundle": bundle.manifest}
    return manifest, arrays


def save(path: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a compact file (deflated .npz) atomically."""
    return write_npz(path, manifest, arrays, compressed=True)


def _load(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    manifest, arrays = read_npz(path, "compact bundle", CompactError, FORMAT, VERSION)
    if not isinstance(manifest.get("bundle"), dict) or "content_hash" not in manifest["bundle"]:
        raise CompactError(f"{path}: the manifest holds no bundle manifest")
    return manifest, arrays


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The compact file's manifest; its "bundle" entry is the rebuilt bundle's manifest."""
    return _load(Path(path))[0]


def unpack(path: str | Path, net: Network, model: FloatModel, provenance: dict[str, Any],
           ) -> Bundle:
    """Rebuild the bundle of a compact file on the float model (`sw.pipeline.load_float`:
    net, model and the cfg / weights provenance). CompactError unless the cfg and weights are
    those the bundle was made from and the rebuilt bundle has the recorded content hash."""
    path = Path(path)
    manifest, arrays = _load(path)
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
        steps = [{} for _ in range(int(manifest["steps"]))]
        for name, a in arrays.items():
            if name.startswith("step"):
                k, i = name[4:].split(".l")
                steps[int(k)][int(i)] = a
        params = _replay(model, steps).fused_params()
        w_max = HwConfig.from_dict(bm["hw_config"]).weight_max
        out: dict[str, np.ndarray] = {}
        for i in _convs(bm):
            fw = arrays[f"l{i}.f_w"]
            base = _floor(params[i][0], fw)
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


# -- command line -------------------------------------------------------------------------

def _make(args: Any, log: Any) -> tuple[Bundle, FloatModel, list[dict[int, np.ndarray]]]:
    """Calibrate, quantize and AdaRound-tune on images skip .. skip + first - 1 (sorted by
    name): the bundle, the pretrained float model and the scale steps it rounds after."""
    from sw.adaround import AdaRoundOptions, adaround, reference_transform
    from sw.fidelity import views
    from sw.pipeline import build_bundle, image_files, letterboxed, load_float
    from sw.postprocess import letterbox, load_image
    from sw.quant import QuantOptions

    files = image_files(args.images)[args.skip:args.skip + args.first]
    if not files:
        raise FileNotFoundError(f"{args.images}: no images left after --skip {args.skip}")
    with tempfile.TemporaryDirectory() as tmp:
        start = build_bundle(Path(tmp) / "ptq.npz", calib=files,
                             opts=QuantOptions.from_tag(args.tag))
    net, model, _ = load_float()
    size = start.input_shape[0]
    imgs = letterboxed(files, size)
    ref, steps = reference_transform(net, model, start, imgs)
    if args.views > 1:      # AdaRound on views of each image (sw.fidelity.views), seeded
        rng = np.random.default_rng(args.view_seed)
        imgs = [letterbox(v, size)[0] for f in files
                for v in views(load_image(f), args.views, rng)]
    bundle, _ = adaround(start, ref, imgs, AdaRoundOptions(), log)
    record = bundle.manifest["quantization"]["adaround"]
    record["image_names"] = [f.name for f in files]
    if args.views > 1:
        record.update(views=args.views, view_seed=args.view_seed)
    return bundle.seal(), model, steps


def main(argv: list[str] | None = None) -> int:
    import argparse

    from sw.darknet import DarknetError
    from sw.pipeline import image_files, letterboxed, load_float, log
    from sw.postprocess import ImageError
    from sw.weights import WeightsError

    p = argparse.ArgumentParser(prog="python -m sw.compact", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="build the default bundle's recipe on images, compact it")
    mk.add_argument("--images", required=True, help="folder of images (sorted by name)")
    mk.add_argument("--first", type=int, default=DEFAULT_RECIPE["first"],
                    help="calibrate and tune on the first K images (default %(default)s)")
    mk.add_argument("--skip", type=int, default=0,
                    help="leave out the first K images (the other fold of a 2-fold check)")
    mk.add_argument("--views", type=int, default=DEFAULT_RECIPE["views"],
                    help="AdaRound on this many views of each image: the image, its mirror, "
                         "random crops (sw.fidelity.views; 1: the images only; default "
                         "%(default)s)")
    mk.add_argument("--view-seed", type=int, default=DEFAULT_RECIPE["view_seed"],
                    help="seed of the crops (default %(default)s)")
    mk.add_argument("--tag", default=DEFAULT_RECIPE["tag"],
                    help="PTQ variant (default %(default)s)")
    mk.add_argument("--out", default=str(DEFAULT), help="compact file (default %(default)s)")
    mk.add_argument("--bundle-out", help="also write the full bundle here")
    pk = sub.add_parser("pack", help="compact a bundle of the pretrained network")
    pk.add_argument("--bundle", required=True)
    pk.add_argument("--calib", help="calibration images of an equalized / filled bundle")
    pk.add_argument("--out", required=True)
    up = sub.add_parser("unpack", help="rebuild a bundle from a compact file")
    up.add_argument("--compact", default=str(DEFAULT), help="default %(default)s")
    up.add_argument("--out", required=True, help="bundle file to write")
    args = p.parse_args(argv)
    if args.cmd == "make" and (args.first < 1 or args.skip < 0 or args.views < 1):
        p.error("--first and --views must be >= 1, --skip >= 0")
    t0 = time.time()
    try:
        if args.cmd == "unpack":
            net, model, prov = load_float()
            bundle = unpack(args.compact, net, model, prov)
            bundle.save(args.out)
            log(f"bundle {bundle.content_hash[:12]} written to {args.out}")
            return 0
        if args.cmd == "make":
            bundle, model, steps = _make(args, log)
            if args.bundle_out:
                bundle.save(args.bundle_out)
        else:
            from sw.adaround import reference_transform

            bundle = Bundle.load(args.bundle)
            net, model, _ = load_float()
            calib = (letterboxed(image_files(args.calib), bundle.input_shape[0])
                     if args.calib else None)
            _, steps = reference_transform(net, model, bundle, calib)
        manifest, arrays = pack(bundle, model, steps)
        save(args.out, manifest, arrays)
    except (BundleError, DarknetError, ImageError, FileNotFoundError, ValueError,
            WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(f"compact bundle written to {args.out} ({Path(args.out).stat().st_size:,} bytes, "
        f"{manifest['exceptions']} exceptions in {manifest['weights']:,} weights, bundle hash "
        f"{bundle.content_hash[:12]}, {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
