"""Detect objects in images, a video or a camera: `python sw/host.py --image dog.jpg`.

Backends: `golden` (the NumPy integer model, bit-exact to the hardware), `fakequant`
(the PyTorch fake-quant model, same integers), `float` (the float network), `sim` (the
device through sw/runtime/device.py: the Verilator simulator of the gateware, or with `--port`
the board on a serial port).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw.spec.config import ConfigError, HwConfig, load_config
from hw.spec.engine import PassError
from hw.spec.memory import ProgramError
from hw.spec.protocol import ProtocolError
from sw.runtime import detect, video
from sw.runtime.bundle import Bundle, BundleError
from sw.runtime.darknet import DarknetError
from sw.runtime.detect import BACKENDS, CALIB_DIR, Backend
from sw.runtime.device import DeviceError, DeviceModeError
from sw.runtime.link import LinkError
from sw.runtime.postprocess import (
    ImageError,
    class_names,
    draw_detections,
    load_image,
    save_image_atomic,
    to_coco_results,
)
from sw.runtime.util import (
    Progress,
    atomic_file,
    echo,
    image_files,
    log,
    progress,
    set_quiet,
    write_json_atomic,
)
from sw.runtime.weights import WeightsError, default_cfg, fetch_weights

EXAMPLES = """examples:
  python sw/host.py --image dog.jpg                      # bundled sample, simulated RTL
  python sw/host.py --image dog.jpg --port /dev/ttyUSB1  # on the board
  python sw/host.py --image dog.jpg --host 192.168.1.50  # on the board, over Ethernet
  python sw/host.py --image photos/ --out results/ --backend golden  # golden model, a folder
  python sw/host.py --video clip.mp4 --out results/ --backend golden  # every frame of a video
  python sw/host.py --camera 0 --backend golden --show   # a camera, live window
  python sw/host.py --image dog.jpg --backend float      # the float network, for comparison
  python sw/host.py --image x.jpg --cfg my.cfg --weights my.weights --names my.names
"""

#: Simulated cycles per wall second of the device with its memory on 2 cores (bench/
#: sim_frame.py: 49.2 M cycles in 168 s, load 3), and its frame cycles per cycle of the
#: MACs at full utilization (47.6 M for 43.4 M: the schedule, memory stalls, parameter
#: loading): the sim backend's time estimate for videos.
SIM_CYCLES_PER_SECOND = 0.29e6
SIM_STALL_FACTOR = 1.10


class UsageError(ValueError):
    """An argument that cannot work (an --out that is a file, a names file that does
    not fit the network)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sw/host.py", description=__doc__.split("\n\n")[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="an image file or a folder of images")
    src.add_argument("--video", help="a video file (OpenCV): every frame")
    src.add_argument("--camera", type=int, metavar="INDEX",
                     help="a camera (OpenCV index, 0: the first) until Ctrl-C, q in the "
                          "window, or --max-frames")
    p.add_argument("--backend", choices=BACKENDS, default="sim",
                   help="what runs the network (default: sim, the simulated RTL, or the "
                        "board with --port)")
    p.add_argument("--cfg", help="Darknet cfg (default: the pretrained Tiny-YOLOv3 cfg)")
    p.add_argument("--weights", help="Darknet weights (default: fetched pretrained weights)")
    p.add_argument("--bundle", help="quantized bundle (default: built from cfg/weights)")
    p.add_argument("--names", help="class names, one a line (default: the 80 COCO names for "
                                   "80 classes, else class0, class1, ...)")
    p.add_argument("--hw-config", help="HwConfig JSON (default: the default build)")
    p.add_argument("--port", help="with --backend sim: the board's serial port (default: "
                                  "the Verilator simulator)")
    p.add_argument("--host", metavar="IP[:PORT]",
                   help="with --backend sim: the board on Ethernet (UDP; port 7777 unless "
                        "given), e.g. 192.168.1.50")
    p.add_argument("--calib", help="calibrate a bundle on this folder of images (default: the "
                                   "shipped default bundle, or for other cfg / weights / "
                                   f"HwConfig a bundle calibrated on {CALIB_DIR.name}/)")
    p.add_argument("--out", help="folder for the results: annotated images and "
                                 "detections.json; for a video or camera NAME.mp4 and "
                                 "detections.jsonl")
    p.add_argument("--show", action="store_true",
                   help="with --video / --camera: show the annotated frames in a window")
    p.add_argument("--max-frames", type=int, metavar="N",
                   help="with --video / --camera: stop after N frames")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or progress lines (results and errors only)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--nms", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    p.add_argument("--no-level", action="store_true",
                   help="do not read-level a board's DDR3 that reports itself UNLEVELED "
                        "(by default the driver levels it before the upload and prints the "
                        "chosen bitslip and delay per byte lane; docs/dram.md)")
    p.add_argument("--filter-heads", action=argparse.BooleanOptionalAction,
                   help="with --backend sim (the simulator, --port or --host): the device sends "
                        "only the head candidates whose objectness can score above --conf "
                        "(about 1 KB instead of 431 KB a frame at 0.25); the detections are "
                        "the same. Default: on for a device with memory when --conf is above "
                        "0; --filter-heads insists (an error on a streaming device), "
                        "--no-filter-heads reads the heads whole")
    args = p.parse_args(argv)
    if not 0 <= args.conf < 1 or not 0 < args.nms <= 1:
        p.error("--conf must lie in [0, 1) and --nms in (0, 1]")
    if args.port and args.backend != "sim":
        p.error("--port needs --backend sim")
    if args.filter_heads and (args.backend != "sim" or args.conf <= 0):
        p.error("--filter-heads needs --backend sim and --conf above 0")
    if args.host and args.backend != "sim":
        p.error("--host needs --backend sim")
    if args.host and args.port:
        p.error("--host and --port are two links to a board: give one")
    if args.host:
        from sw.runtime.udplink import parse_host
        try:
            parse_host(args.host)
        except ValueError as e:
            p.error(str(e))
    if (args.show or args.max_frames is not None) and args.image:
        p.error("--show and --max-frames need --video or --camera")
    if args.max_frames is not None and args.max_frames < 1:
        p.error("--max-frames must be at least 1")
    return args


def load_hw_config(path: str | None) -> HwConfig:
    """--hw-config, with a file that is not text JSON reported like any bad config."""
    try:
        return load_config(path)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a JSON text file ({e.reason} at byte {e.start})") from e


def resolve_images(arg: str) -> list[Path]:
    """The image files of --image; each is opened (header only) so a missing or unreadable
    one stops the run before any work."""
    from PIL import Image, UnidentifiedImageError

    path = Path(arg)
    if not path.exists() and not path.is_absolute() and (CALIB_DIR / path).exists():
        log(f"{arg} not found here; using the bundled sample {CALIB_DIR / path}")
        path = CALIB_DIR / path
    if not path.exists():
        raise ImageError(f"{arg}: no such file or folder")
    files = image_files(path)
    for f in files:
        if not f.is_file():
            raise ImageError(f"{f}: no such file (a dangling link?)" if not f.exists()
                             else f"{f}: not a regular file")
        try:
            with Image.open(f):
                pass
        except UnidentifiedImageError:
            raise ImageError(f"{f}: not a recognized image file") from None
        except OSError as e:
            raise ImageError(f"{f}: cannot read image ({e.strerror or e})") from None
    return files


def prepare_out(arg: str | None) -> Path | None:
    """The --out folder, created; UsageError when it is a file or cannot be made."""
    if not arg:
        return None
    out = Path(arg)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; name a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: the folder is not writable")
    return out


def get_bundle(args: argparse.Namespace, hw: HwConfig) -> Bundle:
    """The bundle to run: --bundle; else the shipped default bundle where its number
    formats are the config's; else one calibrated from cfg / weights / calib and cached
    under a key of everything that decides it (`sw.quant.pipeline.bundle_cache_path`)."""
    if args.bundle:
        return Bundle.load(args.bundle, expect=hw)
    custom = args.cfg or args.weights or args.calib
    if not custom and (path := detect.shipped_bundle(hw)) is not None:
        return Bundle.load(path, expect=hw)
    pipeline = _quant_pipeline("quantizing a bundle (--cfg, --weights, --calib, or "
                               "number formats the shipped bundle was not made for)")
    if not custom:
        return Bundle.load(pipeline.default_bundle(hw), expect=hw)
    cfg = Path(args.cfg) if args.cfg else default_cfg()
    weights = Path(args.weights) if args.weights else fetch_weights()
    calib = args.calib or CALIB_DIR
    path = pipeline.bundle_cache_path("custom", hw, cfg, weights, image_files(calib))
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
    board = args.port or args.host
    if args.backend == "sim" and not board and (args.video or args.camera is not None):
        log(f"warning: the simulated RTL takes about {sim_seconds(bundle, hw):.0f} s per frame "
            "(bench/sim_frame.py on 2 cores); --backend golden gives the same detections "
            "in a fraction of a second, --port runs the board")
    filtered = args.filter_heads is not False and args.conf > 0
    return detect.make_backend(args.backend, bundle, hw, args.port, args.host,
                               args.conf if filtered else None,
                               filter_strict=args.filter_heads is True, level=not args.no_level)


def sim_seconds(bundle: Bundle, hw: HwConfig) -> float:
    """Estimated simulator seconds per frame: the bundle's MACs on the array at full
    utilization, times the measured stall factor, at the measured simulation speed."""
    macs = sum(layer["shape"][0] * layer["shape"][1] * bundle.weight(i).size
               for i, layer in enumerate(bundle.layers) if layer["kind"] == "conv")
    return macs / hw.macs_per_cycle * SIM_STALL_FACTOR / SIM_CYCLES_PER_SECOND


def load_names(args: argparse.Namespace, backend: Backend) -> list[str] | None:
    """--names, or None for the COCO names (80 classes), or class0.. for other counts."""
    counts = {s.num_classes for s in backend.specs}
    if len(counts) != 1:
        raise UsageError(f"the network's heads disagree on the class count: {sorted(counts)}")
    n = counts.pop()
    if args.names:
        try:
            names = [ln.strip() for ln in Path(args.names).read_text().splitlines()
                     if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--names {args.names}: cannot read ({e})") from None
        if len(names) != n:
            raise UsageError(f"--names {args.names}: {len(names)} names, the network has "
                             f"{n} class{'' if n == 1 else 'es'}")
        return names
    return None if n == len(class_names()) else [f"class{i}" for i in range(n)]


def run(args: argparse.Namespace) -> int:
    set_quiet(args.quiet)
    hw = load_hw_config(args.hw_config)
    images = resolve_images(args.image) if args.image else None
    out = prepare_out(args.out)
    source = (None if images else video.open_video(args.video) if args.video
              else video.open_camera(args.camera))
    try:
        window = video.Window(f"tinyyolo: {source.name}") if args.show else None
        backend = make_backend(args, hw)
        names = load_names(args, backend)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-")) if out else None
        try:
            if images is not None:
                return _detect_images(images, backend, names, args, out, staging)
            return _detect_frames(source, backend, names, args, out, staging, window)
        finally:
            if staging:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if source:
            source.close()


def _print_dets(dets: list, names: list[str]) -> None:
    for d in dets:
        x, y, w, h = d.bbox
        echo(f"  {names[d.class_id]:<14} {d.score:5.3f}  x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}")


def _detect_images(images: list[Path], backend: Backend, names: list[str] | None,
                   args: argparse.Namespace, out: Path | None, staging: Path | None) -> int:
    shown = names or class_names()
    results, annotated = [], []
    t_total = time.time()
    for n, path in enumerate(progress(images, "images", unit="image"), 1):
        img = load_image(path)
        t0 = time.time()
        dets, _ = backend.detect(img, args.conf, args.nms)
        prefix = f"[{n}/{len(images)}] " if len(images) > 1 else ""
        echo(f"{prefix}{path.name}: {len(dets)} objects ({backend.name}, "
             f"{time.time() - t0:.2f} s)")
        _print_dets(dets, shown)
        results += to_coco_results(dets, path.name, names=names)
        if out:
            tmp = staging / f"{path.stem}.png"
            save_image_atomic(draw_detections(img, dets, shown), tmp)
            annotated.append(tmp)
    if out:
        for tmp in annotated:
            os.replace(tmp, out / tmp.name)
        write_json_atomic(results, out / "detections.json")
        if backend.reports:    # the first image's run, and every image's frame totals
            write_json_atomic({**backend.reports[0],
                               "images": [{"file_name": p.name, **rep["frame"]} for p, rep
                                          in zip(images, backend.reports, strict=True)]},
                              out / "layer_report.json")
        echo(f"wrote {len(annotated)} annotated image(s) and {out / 'detections.json'} "
             f"({len(results)} detections, {time.time() - t_total:.1f} s)")
    return 0


def _detect_frames(source: video.Source, backend: Backend, names: list[str] | None,
                   args: argparse.Namespace, out: Path | None, staging: Path | None,
                   window: video.Window | None) -> int:
    """Every frame of a video or camera: detections, an annotated MP4 and a JSON line per
    frame; frames per second as it runs. A camera stops at Ctrl-C (results are kept), q in
    the window or --max-frames; a video at its end, or Ctrl-C (nothing is written)."""
    shown = names or class_names()
    total = source.frames if args.max_frames is None else \
        min(args.max_frames, source.frames or args.max_frames)
    writer = video.Mp4Writer(staging / f"{source.name}.mp4", source.fps) if out else None
    lines = staging / "detections.jsonl" if out else None
    n = 0
    t_start = time.time()
    try:
        with Progress(total, source.name, unit="frame") as bar, \
                (atomic_file(lines, "w") if lines else contextlib.nullcontext()) as jsonl:
            try:
                while args.max_frames is None or n < args.max_frames:
                    got = source.read()
                    if got is None:
                        break
                    frame, stamp = got
                    dets, _ = backend.detect(frame, args.conf, args.nms)
                    n += 1
                    echo(f"frame {n - 1} ({stamp:.2f} s): {len(dets)} objects ({backend.name}, "
                         f"{n / max(time.time() - t_start, 1e-9):.2f} frames/s)")
                    bar.update()
                    drawn = (np.asarray(draw_detections(frame, dets, shown))
                             if out or window else None)
                    if jsonl:
                        jsonl.write(json.dumps({"frame": n - 1, "timestamp": round(stamp, 3),
                                                "detections": to_coco_results(
                                                    dets, source.label, names=names)}) + "\n")
                        writer.write(drawn)
                    if window and not window.show(drawn):
                        break
            except KeyboardInterrupt:
                if not source.live:
                    raise
                log(f"stopped after {n} frames")
    finally:
        if writer:
            writer.close()
        if window:
            window.close()
    if n == 0:
        raise video.VideoError(f"{source.name}: no frame was read")
    if out:
        os.replace(staging / f"{source.name}.mp4", out / f"{source.name}.mp4")
        os.replace(staging / "detections.jsonl", out / "detections.jsonl")
        echo(f"wrote {out / (source.name + '.mp4')} and {out / 'detections.jsonl'} ({n} frames, "
             f"{n / max(time.time() - t_start, 1e-9):.2f} frames/s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ImageError, DarknetError, BundleError, ConfigError, WeightsError, LinkError,
            DeviceError, DeviceModeError, PassError, ProgramError, ProtocolError,
            MissingDependency, UsageError, video.VideoError) as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted; nothing written", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
