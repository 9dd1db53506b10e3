"""Post-training quantization study: bit widths x calibration methods x adjustment styles.

    python -m sw.eval.study --images DIR --ann instances.json [--calib-images 32] [--limit N]
        [--bits 4,6,8,10,12,16] [--methods max,std,percentile,mse]
        [--styles float,intmul,pow2] [--out docs/study-results]

Weights and activations get the same width b (4..16); the detection heads stay wider
(min(16, b + 8) bits). Activation ranges are calibrated by max, std (outlier removal at m
standard deviations), percentile or mse. The integer accumulator of each layer is
requantized to the next layer's integers in one of three styles:

- float:  real scales s = clip / (2**(b-1) - 1); y = sat(floor(acc * r + 1/2)) with
          r = s_x * s_w / s_y in float64;
- intmul: the same scales, r approximated by an integer M < 2**mult_bits and a shift n
          (`intmath.find_shift_scale`); y = sat(round_shift(acc * M, n));
- pow2:   power-of-two scales (`sw.quant.pow2_frac_bits`); y = sat(round_shift(acc, shift)),
          the hardware's scheme: at b = 8 it is bit-exact to the golden model on the
          bundle `sw.quant.quantize_network` builds with the same options.

Leaky layers apply the contract's slope 13/128 before rounding in every style. The sweep
evaluates the float model and every configuration on the images after the first N
(calibration) images: mAP@0.5, mAP@0.5:0.95, fidelity mAP@0.5:0.95 against the float
model's detections, and bootstrap intervals; it writes OUT.md, OUT.png and OUT.json.
See docs/study.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hw.spec import intmath
from sw.eval.report import machine_info, write_report
from sw.quant.calib import MSE_SAMPLES, Calibration, act_clip, mse_clip
from sw.quant.model import FloatModel, run_graph
from sw.quant.ptq import (
    ACT_METHODS,
    WEIGHT_GRANULARITY,
    QuantOptions,
    _weight_error_bias,
    pow2_frac_bits,
)
from sw.runtime.darknet import Network
from sw.runtime.graph import network_kinds, scale_groups, scale_roots
from sw.runtime.util import atomic_file, log

__all__ = [
    "BITS_RANGE",
    "METHODS",
    "STYLES",
    "StudyConfig",
    "StudyModel",
    "main",
    "mse_clip",
]

STYLES = ("float", "intmul", "pow2")
METHODS = ACT_METHODS  # max, std, percentile, mse
BITS_RANGE = (4, 16)
#: float64 holds every integer below 2**53 exactly.
FLOAT_EXACT = 1 << 53
#: Largest right shift of the integer-multiplier style (n + 7 stays below 63 in int64).
MUL_MAX_SHIFT = 55


@dataclass(frozen=True)
class StudyConfig:
    """One point of the study: bit width, calibration method, adjustment style, options."""

    bits: int = 8
    method: str = "mse"
    style: str = "pow2"
    weights: str = "channel"
    bias_correction: bool = True
    std_m: float = 3.0
    percentile: float = 99.99
    mult_bits: int = 16

    def __post_init__(self) -> None:
        lo, hi = BITS_RANGE
        if not (isinstance(self.bits, int) and lo <= self.bits <= hi):
            raise ValueError(f"bits must be an integer in {lo}..{hi}, got {self.bits!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.weights not in WEIGHT_GRANULARITY:
            raise ValueError(f"weights must be one of {WEIGHT_GRANULARITY}, got {self.weights!r}")
        if not 2 <= self.mult_bits <= 31:
            raise ValueError(f"mult_bits must lie in 2..31, got {self.mult_bits}")
        self.quant_options()  # validates std_m and percentile

    # Formats derived from b. At b = 8 they equal the default HwConfig's (acc 32 bits,
    # shifts up to 31, biases within 2**30, 16-bit heads).
    @property
    def head_bits(self) -> int:
        return min(16, self.bits + 8)

    @property
    def acc_bits(self) -> int:
        return max(32, 2 * self.bits + 16)

    @property
    def max_shift(self) -> int:
        return self.acc_bits - 1

    @property
    def bias_limit(self) -> int:
        return 1 << (self.acc_bits - 2)

    @property
    def tag(self) -> str:
        return f"{self.style}-{self.bits}-{self.quant_options().tag}"

    def quant_options(self) -> QuantOptions:
        """The sw.quant.ptq options of the same choices (heads calibrated by max)."""
        return QuantOptions(self.weights, self.method, self.percentile, "max",
                            self.bias_correction, self.std_m)


@dataclass
class QConv:
    """One quantized conv layer: integer weights and bias (as float64) and requantizer."""

    w: torch.Tensor            # OIHW integers
    b: torch.Tensor            # (C,) integers at the accumulator scale s_in * s_w[c]
    stride: int
    pad: int
    leaky: bool
    out_bits: int
    s_out: float               # real value of one output step
    shift: torch.Tensor | None = None   # pow2, intmul: (C, 1, 1) int64
    mult: torch.Tensor | None = None    # intmul: (C, 1, 1) int64
    ratio: torch.Tensor | None = None   # float: (C, 1, 1) float64


class StudyModel:
    """Tiny-YOLOv3 (any cfg) quantized per a StudyConfig, executed in exact integers.

    Feature maps are float64 tensors holding integers; convolutions are exact because
    every accumulator is below 2**53 (checked when building). Requantization uses
    hw.spec.intmath: `requant` (pow2), `requant_mul` (intmul), `requant_float` (float).
    """

    def __init__(self, net: Network, model: FloatModel, cal: Calibration, cfg: StudyConfig):
        self.net, self.cfg = net, cfg
        self.kinds = network_kinds(net)
        self.layers: dict[int, QConv] = {}
        self.head_indices = list(net.head_indices)
        params = model.fused_params()
        if cfg.style == "pow2":
            self._build_pow2(params, cal)
        else:
            self._build_real(params, cal)
        lo, hi = intmath.int_range(cfg.bits)
        for i, q in self.layers.items():
            k = q.w.shape[1] * q.w.shape[2] * q.w.shape[3]
            bound = k * -lo * hi + cfg.bias_limit
            if bound >= FLOAT_EXACT:
                raise ValueError(f"layer {i}: accumulators may reach {bound} >= 2**53, not exact "
                                 f"in float64 at {cfg.bits} bits")

    # -- building ----------------------------------------------------------------------
    def _layer(self, i: int, wq: np.ndarray, bq: np.ndarray, s_out: float) -> QConv:
        layer = self.net.layers[i]
        return QConv(torch.from_numpy(wq.astype(np.float64)),
                     torch.from_numpy(bq.astype(np.float64)), layer.stride, layer.pad,
                     layer.activation == "leaky",
                     self.cfg.head_bits if i in self.head_indices else self.cfg.bits, s_out)

    def _bias(self, i: int, params: dict, w_deq: np.ndarray, cal: Calibration) -> np.ndarray:
        w, b = params[i]
        if self.cfg.bias_correction:
            b = b - _weight_error_bias(self.net, i, w, w_deq, cal)
        return b

    def _build_pow2(self, params: dict, cal: Calibration) -> None:
        """Exactly `quantize_network`'s scales and integers, at any bit width."""
        c = self.cfg
        f_x = c.bits - 1  # input pixel/255 at 2**-(b-1): INPUT_FRAC_BITS at 8 bits
        f_in, f_out, f_w = pow2_frac_bits(self.net, params, cal, c.quant_options(), c.bits,
                                          c.bits, c.head_bits, c.max_shift, c.bias_limit, f_x)
        self.input_top = 1 << f_x
        self.input_scale = 2.0 ** -f_x
        for i in self.net.conv_indices:
            fw = f_w[i]
            wq = intmath.quantize(params[i][0], fw[:, None, None, None], c.bits, symmetric=True)
            b = self._bias(i, params, wq * np.exp2(-fw)[:, None, None, None], cal)
            bq = np.clip(intmath.quantize(b, f_in[i] + fw, c.acc_bits), -c.bias_limit,
                         c.bias_limit)
            q = self._layer(i, wq, bq, 2.0 ** -f_out[i])
            q.shift = torch.from_numpy((f_in[i] + fw - f_out[i]).astype(np.int64))[:, None, None]
            self.layers[i] = q

    def _build_real(self, params: dict, cal: Calibration) -> None:
        """Real scales s = clip / (2**(bits-1) - 1) for activations and weights."""
        c = self.cfg
        net, heads = self.net, set(self.head_indices)
        hi_w = (1 << (c.bits - 1)) - 1
        self.input_top = hi_w  # the input's range [0, 1] onto the full code range
        self.input_scale = 1.0 / hi_w
        clip: dict[int, float] = {}
        for i in net.conv_indices:
            if i in heads:
                clip[i] = cal.maxabs[i]
            elif c.method == "mse":
                x = cal.samples[i]
                if x.size > MSE_SAMPLES:
                    x = x[np.random.default_rng(i).choice(x.size, MSE_SAMPLES, replace=False)]
                clip[i] = mse_clip(x, cal.maxabs[i], c.bits)
            else:
                clip[i] = act_clip(cal, i, c.method, c.percentile, c.std_m)
        # tensors concatenated by a route share one scale (the coarser)
        kinds = self.kinds
        for g in scale_groups(kinds):
            top = max(clip[r] for r in g)
            for r in g:
                clip[r] = top
        s_out = {}
        for i in net.conv_indices:
            bits = c.head_bits if i in heads else c.bits
            s_out[i] = (clip[i] or 1.0) / ((1 << (bits - 1)) - 1)
        for i in net.conv_indices:
            roots = scale_roots(kinds, i - 1)
            s_in = s_out[roots[0]] if roots else self.input_scale
            w = params[i][0]
            m = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
            if c.weights == "tensor":
                m = np.full_like(m, m.max())
            s_w = np.where(m > 0, m, 1.0) / hi_w
            wq = np.clip(np.floor(w / s_w[:, None, None, None] + 0.5), -hi_w, hi_w)
            b = self._bias(i, params, wq * s_w[:, None, None, None], cal)
            bq = np.clip(np.floor(b / (s_in * s_w) + 0.5), -c.bias_limit, c.bias_limit)
            q = self._layer(i, wq, bq, s_out[i])
            ratio = s_in * s_w / s_out[i]
            if c.style == "float":
                q.ratio = torch.from_numpy(ratio)[:, None, None]
            else:
                mn = [intmath.find_shift_scale(float(r), c.mult_bits, MUL_MAX_SHIFT)
                      for r in ratio]
                q.mult = torch.tensor([m for m, _ in mn], dtype=torch.int64)[:, None, None]
                q.shift = torch.tensor([n for _, n in mn], dtype=torch.int64)[:, None, None]
            self.layers[i] = q

    # -- running -----------------------------------------------------------------------
    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """Letterboxed uint8 HWC pixels to the input integers (int64 HWC)."""
        return intmath.quantize_pixels(pixels, self.input_top, self.cfg.bits)

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        q = self.layers[i]
        acc = F.conv2d(x, q.w, q.b, q.stride, q.pad)
        if self.cfg.style == "float":
            return intmath.requant_float(acc, q.ratio, q.leaky, q.out_bits)
        a = acc.to(torch.int64)
        if self.cfg.style == "pow2":
            y = intmath.requant(a, q.shift, q.leaky, q.out_bits)
        else:
            y = intmath.requant_mul(a, q.mult, q.shift, q.leaky, q.out_bits)
        return y.to(torch.float64)

    def run(self, pixels: np.ndarray, keep: bool = False) -> list[torch.Tensor | None]:
        """Per-layer integer outputs (float64 NCHW tensors) for one letterboxed image."""
        x = torch.from_numpy(self.quantize_input(pixels).astype(np.float64))
        with torch.no_grad():
            return run_graph(self.kinds, x.permute(2, 0, 1)[None], self._conv, keep)

    def ints(self, pixels: np.ndarray) -> list[np.ndarray | None]:
        """Every layer's integer output as an int64 HWC array (like GoldenModel.run)."""
        return [None if y is None else y[0].permute(1, 2, 0).numpy().astype(np.int64)
                for y in self.run(pixels, keep=True)]

    def heads(self, pixels: np.ndarray) -> list[np.ndarray]:
        """Real-valued detection-head outputs (HWC float64) for post-processing."""
        outs = self.run(pixels)
        return [outs[i][0].permute(1, 2, 0).numpy() * self.layers[i].s_out
                for i in self.head_indices]


# -- the sweep -----------------------------------------------------------------------------

def parse_list(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what}: empty list")
    for t in items:
        if t not in allowed:
            raise ValueError(f"--{what}: {t!r} is not one of {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise ValueError(f"--{what}: repeated entries in {text!r}")
    return items


def parse_bits(text: str) -> list[int]:
    lo, hi = BITS_RANGE
    out = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        try:
            b = int(t)
        except ValueError:
            raise ValueError(f"--bits: {t!r} is not an integer") from None
        if not lo <= b <= hi:
            raise ValueError(f"--bits: {b} is outside {lo}..{hi}")
        out.append(b)
    if not out:
        raise ValueError("--bits: empty list")
    if len(set(out)) != len(out):
        raise ValueError(f"--bits: repeated entries in {text!r}")
    return out


def split_images(images: Path, gt: dict, calib_n: int,
                 limit: int | None) -> tuple[list[Path], list[Path]]:
    """(calibration, evaluation) image files: the first calib_n sorted names, the rest."""
    names = {img["file_name"] for img in gt["images"]}
    files = sorted(p for p in images.iterdir() if p.name in names)
    if len(files) <= calib_n:
        raise SystemExit(f"error: {len(files)} annotated images in {images}, need more than "
                         f"--calib-images {calib_n}")
    calib, ev = files[:calib_n], files[calib_n:]
    return calib, ev[:limit] if limit else ev


def _coco_dets(dets: list, image_id: int) -> list[dict]:
    from sw.runtime.postprocess import COCO80_TO_91
    return [{"image_id": image_id, "category_id": COCO80_TO_91[d.class_id],
             "bbox": [float(v) for v in d.bbox], "score": float(d.score)} for d in dets]


def run_detections(heads: Callable[[np.ndarray], list[np.ndarray]], frames: list, specs: list,
                   ids: list[int], label: str) -> tuple[list[dict], float]:
    """COCO results of a backend on the letterboxed frames; (results, seconds)."""
    from sw.eval.evaluate import EVAL_CONF
    from sw.runtime.postprocess import detect
    out: list[dict] = []
    t0 = time.time()
    for n, ((lb, box), img_id) in enumerate(zip(frames, ids, strict=True), 1):
        out += _coco_dets(detect(heads(lb), specs, box, EVAL_CONF, 0.45, max_dets=100), img_id)
        if n % 16 == 0 and n < len(frames):
            log(f"    {label}: {n}/{len(frames)} images ({time.time() - t0:.0f} s)")
    return out, time.time() - t0


def _ci_dict(vals: np.ndarray, ref: np.ndarray | None) -> dict[str, list[float]]:
    from sw.eval.evaluate import percentile_interval
    d = {"mAP50": list(percentile_interval(vals[:, 0])),
         "mAP50_95": list(percentile_interval(vals[:, 1]))}
    if ref is not None:
        d["diff50"] = list(percentile_interval(ref[:, 0] - vals[:, 0]))
        d["diff50_95"] = list(percentile_interval(ref[:, 1] - vals[:, 1]))
    return d


def sweep(args: argparse.Namespace) -> dict:
    """Calibrate once, evaluate float and every configuration; returns the report."""
    from sw.eval.evaluate import AGREE_CONF, ImageEval, resample_indices
    from sw.quant.calib import calibrate
    from sw.quant.pipeline import load_float
    from sw.runtime.detect import head_specs
    from sw.runtime.postprocess import letterbox, load_image

    torch.set_num_threads(args.threads)
    t_start = time.time()
    gt = json.loads(args.ann.read_text())
    calib_files, eval_files = split_images(args.images, gt, args.calib_images, args.limit)
    by_name = {img["file_name"]: img for img in gt["images"]}
    gt = {**gt, "images": [by_name[p.name] for p in eval_files]}
    ids = [by_name[p.name]["id"] for p in eval_files]
    net, model, prov = load_float()
    log(f"calibrating on {len(calib_files)} images ({calib_files[0].name} .. "
        f"{calib_files[-1].name}) ...")
    cal = calibrate(model, (letterbox(load_image(p), net.width)[0] for p in calib_files))
    frames = [letterbox(load_image(p), net.width) for p in eval_files]
    specs = head_specs(net)
    from sw.quant.model import float_heads
    f_dets, f_sec = run_detections(float_heads(model), frames, specs, ids, "float")
    fid_gt = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
    for d in f_dets:
        if d["score"] >= AGREE_CONF:
            x, y, w, h = d["bbox"]
            fid_gt["annotations"].append({"id": len(fid_gt["annotations"]) + 1,
                                          "image_id": d["image_id"], "iscrowd": 0,
                                          "category_id": d["category_id"], "bbox": [x, y, w, h],
                                          "area": w * h})
    f_eval = ImageEval(gt, f_dets)
    idx = resample_indices(len(f_eval), args.bootstrap, args.seed) if args.bootstrap else None
    f_boot = np.array([f_eval.map(ix) for ix in idx]) if idx is not None else None
    m50, m5095 = f_eval.map()
    float_row = {"mAP50": m50, "mAP50_95": m5095, "s_per_image": f_sec / len(frames),
                 "dets_at_0.25": len(fid_gt["annotations"])}
    if f_boot is not None:
        float_row["ci"] = _ci_dict(f_boot, None)
    log(f"float: mAP@0.5 {m50:.4f}, mAP@0.5:0.95 {m5095:.4f} ({f_sec:.0f} s)")
    settings = {"images": str(args.images), "ann": str(args.ann),
                "calib_images": [p.name for p in calib_files], "eval_images": len(eval_files),
                "weights": args.weights, "bias_correction": not args.no_bias_correction,
                "std_m": args.std_m, "percentile": args.percentile, "mult_bits": args.mult_bits,
                "bootstrap": args.bootstrap, "seed": args.seed}
    partial = args.out.with_name(args.out.name + ".partial.json")
    done: dict[str, dict] = {}
    if args.resume and partial.exists():
        old = json.loads(partial.read_text())
        if old.get("settings") == settings:
            done = {r["tag"]: r for r in old["rows"]}
            log(f"resuming: {len(done)} configurations already done in {partial}")
        else:
            log(f"{partial} was made with other settings: starting afresh")
    configs = [StudyConfig(b, m, s, args.weights, not args.no_bias_correction, args.std_m,
                           args.percentile, args.mult_bits)
               for b in args.bits for m in args.methods for s in args.styles]
    rows = []
    for k, c in enumerate(configs, 1):
        if c.tag in done:
            rows.append(done[c.tag])
            continue
        t0 = time.time()
        try:
            sm = StudyModel(net, model, cal, c)
            dets, sec = run_detections(sm.heads, frames, specs, ids, c.tag)
        except ValueError as e:  # an inexact configuration: report it, go on with the rest
            log(f"[{k}/{len(configs)}] {c.tag}: skipped: {e}")
            rows.append({"tag": c.tag, "bits": c.bits, "method": c.method, "style": c.style,
                         "error": str(e)})
            continue
        ie = ImageEval(gt, dets)
        m50, m5095 = ie.map()
        f50, f5095 = ImageEval(fid_gt, dets).map()
        row = {"tag": c.tag, "bits": c.bits, "method": c.method, "style": c.style,
               "mAP50": m50, "mAP50_95": m5095, "fidelity50": f50, "fidelity50_95": f5095,
               "s_per_image": sec / len(frames)}
        if idx is not None:
            row["ci"] = _ci_dict(np.array([ie.map(ix) for ix in idx]), f_boot)
        row["seconds"] = time.time() - t0
        rows.append(row)
        log(f"[{k}/{len(configs)}] {c.tag}: mAP@0.5 {m50:.4f}, mAP@0.5:0.95 {m5095:.4f}, "
            f"fidelity {f5095:.4f} ({row['seconds']:.0f} s)")
        with atomic_file(partial) as f:
            f.write(json.dumps({"settings": settings, "rows": rows}, indent=1).encode())
    return {"settings": settings, "float": float_row, "rows": rows,
            "provenance": prov,
            "machine": machine_info(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t_start)),
            "seconds": time.time() - t_start}


def markdown(report: dict) -> str:
    """The results table: rows bits x method, per style mAP@0.5, mAP@0.5:0.95, fidelity."""
    from sw.eval.evaluate import fmt_ci
    rows = report["rows"]
    styles = [s for s in STYLES if any(r["style"] == s for r in rows)]
    fl, st = report["float"], report["settings"]
    lines = [f"{st['eval_images']} evaluation images, {len(st['calib_images'])} calibration "
             f"images; weights per {st['weights']}, bias correction "
             f"{'on' if st['bias_correction'] else 'off'}, std m = {st['std_m']:g}, "
             f"percentile {st['percentile']:g}, intmul multipliers of {st['mult_bits']} bits.",
             "Columns are the adjustment styles (float multiplier, integer multiplier + shift, "
             "power-of-two shift); fidelity is mAP@0.5:0.95 against the float model's "
             "detections at score >= 0.25.",
             "", f"Float model: mAP@0.5 {fl['mAP50']:.4f}, mAP@0.5:0.95 {fl['mAP50_95']:.4f}"
             + (f" (95% CI {fmt_ci(fl['ci']['mAP50'])} and {fmt_ci(fl['ci']['mAP50_95'])})"
                if "ci" in fl else ""), ""]
    head = "| bits | method |" + "".join(
        f" {s}: mAP@0.5 | {s}: mAP@0.5:0.95 | {s}: fidelity |" for s in styles)
    lines += [head, "|---|---|" + "---|---|---|" * len(styles)]
    by = {(r["bits"], r["method"], r["style"]): r for r in rows}
    keys = sorted({(r["bits"], METHODS.index(r["method"])) for r in rows})
    for bits, mi in keys:
        m = METHODS[mi]
        cells = ""
        for s in styles:
            r = by.get((bits, m, s))
            cells += (" - | - | - |" if r is None else " error | - | - |" if "error" in r else
                      f" {r['mAP50']:.4f} | {r['mAP50_95']:.4f} | {r['fidelity50_95']:.4f} |")
        lines.append(f"| {bits} | {m} |{cells}")
    if any("ci" in r for r in rows):
        lines += ["", f"95% bootstrap intervals ({st['bootstrap']} resamples of the evaluation "
                  f"images, seed {st['seed']}) of the paired difference float - quantized:", "",
                  "| bits | method |" + "".join(f" {s}: Δ mAP@0.5 | {s}: Δ mAP@0.5:0.95 |"
                                              for s in styles),
                  "|---|---|" + "---|---|" * len(styles)]
        for bits, mi in keys:
            m = METHODS[mi]
            cells = ""
            for s in styles:
                r = by.get((bits, m, s))
                cells += (" - | - |" if r is None or "ci" not in r else
                          f" {fmt_ci(r['ci']['diff50'])} | {fmt_ci(r['ci']['diff50_95'])} |")
            lines.append(f"| {bits} | {m} |{cells}")
    lines += ["", f"Run {report['started']} on {report['machine']['node']} "
              f"({report['machine']['cpus']} CPUs, {report['machine']['torch_threads']} torch "
              f"thread(s)): {report['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def plot(report: dict) -> bytes:
    """PNG of mAP@0.5 against bits, one line per method x style, float as a dashed line."""
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True))
    dashes = {"float": "-", "intmul": "--", "pow2": ":"}
    marks = {"float": "o", "intmul": "s", "pow2": "^"}
    for m in METHODS:
        for s in STYLES:
            pts = sorted((r["bits"], r["mAP50"]) for r in report["rows"]
                         if r["method"] == m and r["style"] == s and "error" not in r)
            if pts:
                ax.plot(*zip(*pts, strict=True), dashes[s], marker=marks[s], color=colors[m],
                        label=f"{m} / {s}")
    ax.axhline(report["float"]["mAP50"], color="black", lw=1, ls="-.", label="float")
    ax.set_xlabel("bits (weights and activations)")
    ax.set_ylabel("mAP@0.5")
    ax.set_title("Tiny-YOLOv3 PTQ: calibration method / adjustment style")
    ax.set_xticks(sorted({r["bits"] for r in report["rows"]}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sw.eval.study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, type=Path, help="folder of COCO images")
    p.add_argument("--ann", required=True, type=Path, help="COCO-format instances.json")
    p.add_argument("--calib-images", type=int, default=32,
                   help="calibrate on the first N images (sorted by name), evaluate the rest")
    p.add_argument("--limit", type=int, help="evaluate only the first N evaluation images")
    p.add_argument("--bits", default="4,6,8,10,12,16", help="comma list of widths, 4..16")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " +
                   "|".join(METHODS))
    p.add_argument("--styles", default=",".join(STYLES), help="comma list of " +
                   "|".join(STYLES))
    p.add_argument("--weights", choices=WEIGHT_GRANULARITY, default="channel")
    p.add_argument("--no-bias-correction", action="store_true")
    p.add_argument("--std-m", type=float, default=3.0, help="m of the std method")
    p.add_argument("--percentile", type=float, default=99.99)
    p.add_argument("--mult-bits", type=int, default=16, help="bits of the intmul multiplier")
    p.add_argument("--bootstrap", type=int, default=100, metavar="N",
                   help="bootstrap resamples of the evaluation images (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--resume", action="store_true",
                   help="skip configurations already in OUT.partial.json (same settings)")
    p.add_argument("--out", type=Path, default=Path("docs/study-results"),
                   help="output prefix: writes OUT.md, OUT.png, OUT.json")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.bits = parse_bits(args.bits)
        args.methods = parse_list(args.methods, METHODS, "methods")
        args.styles = parse_list(args.styles, STYLES, "styles")
        StudyConfig(8, "std", "intmul", args.weights, True, args.std_m, args.percentile,
                    args.mult_bits)
    except ValueError as e:
        p.error(str(e))
    if args.calib_images < 1:
        p.error("--calib-images must be >= 1")
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.bootstrap < 0:
        p.error("--bootstrap must be >= 0")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if not args.images.is_dir():
        p.error(f"{args.images}: not a folder")
    if not args.ann.is_file():
        p.error(f"{args.ann}: not found")
    report = sweep(args)
    out = args.out
    md = markdown(report)
    write_report(out, report, md, plot(report))
    out.with_name(out.name + ".partial.json").unlink(missing_ok=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
