"""Making compact bundles (`sw.runtime.compact` reads and unpacks them): `pack` a bundle
of the pretrained network, or `make` the default bundle's recipe on images.

    python -m sw.quant.compact make --images coco-train128/images   # make default-bundle
    python -m sw.quant.compact pack --bundle B.npz [--calib DIR] --out C.npz
    python -m sw.quant.compact unpack --compact C.npz --out B.npz
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sw.quant.model import FloatModel
from sw.runtime.bundle import Bundle, BundleError, write_npz
from sw.runtime.compact import (
    DEFAULT,
    FORMAT,
    VERSION,
    CompactError,
    conv_layers,
    floor_weights,
    read_compact,
    replay,
    scale_steps,
    unpack,
)
from sw.runtime.graph import network_kinds

__all__ = ["DEFAULT_RECIPE", "pack", "rounded_model", "save"]

#: How `make` builds the default bundle: PTQ variant tag, calibration/AdaRound images
#: (first K, sorted), AdaRound on `views` views of each (the image, its mirror, crops
#: seeded by view_seed).
DEFAULT_RECIPE = {"tag": "channel-mse-bc-eq0.5-fill", "first": 64, "views": 4, "view_seed": 123}
#: A rounding of the float model has exceptions only where the int8 range saturates.
_MAX_EXCEPTIONS = 1e-3


def pack(bundle: Bundle, model: FloatModel, steps: Sequence[dict[int, np.ndarray]] = (),
         ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The compact form (manifest, arrays) of `bundle`, a rounding of `model` transformed by
    the scale `steps`. CompactError if the bundle is not such a rounding."""
    params = replay(model.fused_params(), network_kinds(model.net), steps)
    arrays: dict[str, np.ndarray] = {}
    total = exceptions = 0
    for i in conv_layers(bundle.manifest):
        if i not in params:
            raise CompactError(f"layer {i}: the float model has no such conv")
        q = bundle.weight(i).astype(np.int64)
        base = floor_weights(params[i][0], bundle.f_w(i))
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


def rounded_model(bundle: Bundle, model: FloatModel,
                  calib: Sequence[np.ndarray] | None = None) -> FloatModel:
    """The float model whose weights `bundle` rounds: `model` (the Darknet float network),
    or for equalized / filled bundles `model` after the bundle's scale steps, read from the
    shipped compact file when the bundle is the default bundle, else rebuilt from the
    calibration images `calib` (`sw.quant.adaround.reference_model`). CompactError unless
    the bundle's weights are floor or floor + 1 of the result's (`pack`)."""
    from sw.quant import tune
    from sw.quant.adaround import reference_model

    manifest, arrays = read_compact(DEFAULT)
    if bundle.content_hash == manifest["bundle"]["content_hash"]:
        for step in scale_steps(manifest, arrays):
            model = tune.equalize(model, step)
    else:
        model = reference_model(model.net, model, bundle, calib)
    pack(bundle, model)
    return model


def save(path: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a compact file (deflated .npz) atomically."""
    return write_npz(path, manifest, arrays, compressed=True)


# -- command line -------------------------------------------------------------------------

def _make(args: Any, log: Any) -> tuple[Bundle, FloatModel, list[dict[int, np.ndarray]]]:
    """Calibrate, quantize and AdaRound-tune on images skip .. skip + first - 1 (sorted by
    name): the bundle, the pretrained float model and the scale steps it rounds after."""
    from sw.quant.adaround import AdaRoundOptions, adaround, reference_transform
    from sw.quant.pipeline import build_bundle, load_float
    from sw.quant.ptq import QuantOptions
    from sw.quant.views import views
    from sw.runtime.postprocess import letterbox, letterboxed, load_image
    from sw.runtime.util import image_files

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
    if args.views > 1:      # AdaRound on views of each image (sw.eval.fidelity.views), seeded
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

    from sw.quant.pipeline import load_float
    from sw.runtime.darknet import DarknetError
    from sw.runtime.detect import load_network
    from sw.runtime.postprocess import ImageError, letterboxed
    from sw.runtime.util import image_files, log
    from sw.runtime.weights import WeightsError

    p = argparse.ArgumentParser(prog="python -m sw.quant.compact",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="build the default bundle's recipe on images, compact it")
    mk.add_argument("--images", required=True, help="folder of images (sorted by name)")
    mk.add_argument("--first", type=int, default=DEFAULT_RECIPE["first"],
                    help="calibrate and tune on the first K images (default %(default)s)")
    mk.add_argument("--skip", type=int, default=0,
                    help="leave out the first K images (the other fold of a 2-fold check)")
    mk.add_argument("--views", type=int, default=DEFAULT_RECIPE["views"],
                    help="AdaRound on this many views of each image: the image, its mirror, "
                         "random crops (sw.eval.fidelity.views; 1: the images only; default "
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
            net, weights, prov = load_network()
            bundle = unpack(args.compact, net, weights, prov)
            bundle.save(args.out)
            log(f"bundle {bundle.content_hash[:12]} written to {args.out}")
            return 0
        if args.cmd == "make":
            bundle, model, steps = _make(args, log)
            if args.bundle_out:
                bundle.save(args.bundle_out)
        else:
            from sw.quant.adaround import reference_transform

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
