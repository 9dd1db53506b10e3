"""Build a quantized bundle: `python -m sw.quant.quantize --out yolo.npz [options]`.

Calibrates power-of-two activation scales on a folder of images, quantizes weights
(per output channel or per tensor) and biases, and writes the bundle atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hw.spec.config import ConfigError, load_config
from sw.quant.pipeline import build_bundle
from sw.quant.ptq import ACT_METHODS, WEIGHT_GRANULARITY, QuantOptions, scale_table
from sw.runtime.bundle import BundleError
from sw.runtime.darknet import DarknetError
from sw.runtime.detect import CALIB_DIR
from sw.runtime.postprocess import ImageError
from sw.runtime.util import set_quiet
from sw.runtime.weights import WeightsError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.quant.quantize",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="bundle file to write (.npz)")
    p.add_argument("--cfg", help="Darknet cfg (default: the pretrained Tiny-YOLOv3 cfg)")
    p.add_argument("--weights", help="Darknet weights (default: fetched pretrained weights)")
    p.add_argument("--calib", default=str(CALIB_DIR), help="folder of calibration images")
    p.add_argument("--hw-config", help="HwConfig JSON (default: the default build)")
    p.add_argument("--weight-scales", choices=WEIGHT_GRANULARITY, default="channel")
    p.add_argument("--act-calib", choices=ACT_METHODS, default=QuantOptions().activations)
    p.add_argument("--percentile", type=float, default=QuantOptions().percentile)
    p.add_argument("--no-bias-correction", action="store_true",
                   help="skip the bias correction of weight rounding (on by default)")
    p.add_argument("--variant", metavar="TAG",
                   help="all options as one variant tag of sw.eval.evaluate, tuning steps included "
                        "(e.g. channel-mse-bc-eq0.5-fill); replaces the four options above")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    set_quiet(args.quiet)
    try:
        opts = (QuantOptions.from_tag(args.variant) if args.variant else
                QuantOptions(args.weight_scales, args.act_calib, args.percentile,
                             bias_correction=not args.no_bias_correction))
        bundle = build_bundle(Path(args.out), args.cfg, args.weights, args.calib,
                              load_config(args.hw_config), opts)
    except (ValueError, ImageError, DarknetError, BundleError, ConfigError, WeightsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(scale_table(bundle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
