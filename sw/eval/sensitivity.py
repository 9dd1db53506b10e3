"""Per-layer quantization sensitivity of a bundle: which layers cost the fidelity.

    python -m sw.eval.sensitivity --images DIR [--skip 64] [--limit N] [--views 1]
        [--bundle default] [--calib DIR] [--bootstrap 200] [--out docs/sensitivity]

For the network input and every conv layer (the "units") two mixed models
(`sw.quant.model.MixedModel`) are scored the way `sw.eval.fidelity` scores bundles
(fidelity mAP@0.5:0.95 against the float model's own detections at score >= 0.25, head
SQNR, cluster-bootstrap intervals over the images, paired differences to the bundle):

- **only U**: U quantized, every other unit float;
- **all but U**: U float, every other unit quantized as in the bundle.

A quantized conv layer has the bundle's integer weights (at 2**-f_w), its integer bias and
its output requantization (the accumulator rounded to the 2**-f_out grid, leaky slope
13/128, saturation to int8 or the head width), applied to whatever real values reach it.
A float conv layer has the float weights the bundle rounds (the Darknet network with BN
fused and, for the default bundle, its equalization and grid-fill scale steps) in float32
with leaky slope 0.1, and its output keeps its real values. The quantized input is the
int8 image (pixel / 255 at 2**-7); the float one pixel / 255. The float reference of the
fidelity and the SQNR is that same float model, so "all units float" scores 1 (and inf
dB), and "all quantized" (the row "all") is the bundle, bit for bit. Writes OUT.md (the
command, the machine and date, the table), OUT.png (bars) and OUT.json.
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hw.spec.config import load_config
from sw.eval import fidelity
from sw.eval.evaluate import AGREE_CONF, fmt_ci
from sw.eval.report import machine_info, write_report
from sw.quant.compact import rounded_model
from sw.quant.model import FakeQuantModel, FloatModel, MixedModel
from sw.quant.pipeline import default_bundle, load_float, make_backend
from sw.runtime.bundle import Bundle
from sw.runtime.detect import Backend, head_specs
from sw.runtime.postprocess import ImageError, letterboxed
from sw.runtime.util import image_files, log

__all__ = ["INPUT", "backends", "evaluate", "main", "markdown", "plot", "units", "write"]

#: The unit index of the network input (conv layers are their layer index).
INPUT = -1


def units(bundle: Bundle) -> list[int]:
    """The units one quantizes or not: the input (`INPUT`), then every conv layer."""
    return [INPUT] + [i for i, layer in enumerate(bundle.layers) if layer["kind"] == "conv"]


def unit_name(u: int) -> str:
    return "input" if u == INPUT else f"layer {u}"


def describe(bundle: Bundle, u: int) -> str:
    """A unit in words: the input's shape, or a conv's kernel, channels, map and activation."""
    if u == INPUT:
        h, w, c = bundle.input_shape
        return f"image {h}x{w}x{c}"
    layer = bundle.layers[u]
    o, k, _, c = bundle.weight(u).shape
    h, w, _ = layer["shape"]
    return (f"{k}x{k} {c}->{o}, {h}x{w}, {layer['activation']}"
            + (", head" if layer.get("head") else ""))


def backends(bundle: Bundle, reference: FloatModel) -> dict[str, Backend]:
    """"all" (the bundle: the golden model), then per unit U "only U" and "all but U"."""
    fq = FakeQuantModel(bundle)

    def mixed(quantized: set[int]) -> Backend:
        model = MixedModel(fq, reference, quantized - {INPUT}, INPUT in quantized)
        return Backend("mixed", bundle.input_shape[0], head_specs(bundle), model.heads)

    everything = set(units(bundle))
    out = {"all": make_backend("golden", bundle)}
    for u in units(bundle):
        out[f"only {unit_name(u)}"] = mixed({u})
        out[f"all but {unit_name(u)}"] = mixed(everything - {u})
    return out


def evaluate(files: Sequence[Path], bundle: Bundle, reference: FloatModel, n_views: int = 1,
             seed: int = 0, bootstrap: int = 0, command: str = "") -> dict:
    """Fidelity and head SQNR of "all", and of "only U" and "all but U" for every unit, on
    `n_views` views of every image (`sw.eval.fidelity.evaluate`); the report groups the
    rows by unit and records `command`, the machine and the date."""
    t0 = time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t0))
    float_be = make_backend("float", net=reference.net, model=reference)
    rep = fidelity.evaluate(files, float_be, backends(bundle, reference),
                            bundle.input_shape[0], n_views, seed, bootstrap, pool_heads=True)
    rows = {r["bundle"]: r for r in rep.pop("rows")}
    rep["all"] = rows["all"]
    rep["units"] = [{"unit": u, "name": unit_name(u), "layer": describe(bundle, u),
                     "only": rows[f"only {unit_name(u)}"],
                     "all_but": rows[f"all but {unit_name(u)}"]} for u in units(bundle)]
    rep["bundle"] = {"content_hash": bundle.content_hash,
                     "quantization": {k: v for k, v in bundle.manifest.get(
                         "quantization", {}).items() if not isinstance(v, dict | list)}}
    rep.update(command=command, started=started, machine=machine_info(),
               seconds=time.time() - t0)
    return rep


def _ci(row: dict, key: str) -> str:
    return f" {fmt_ci(row['ci'][key])}" if "ci" in row and key in row["ci"] else ""


def ranking(report: dict) -> list[dict]:
    """The units, most sensitive first: by the fidelity recovered when only that unit runs
    in float (all but U - all)."""
    base = report["all"]["fidelity50_95"]
    return sorted(report["units"], key=lambda r: base - r["all_but"]["fidelity50_95"])


def markdown(report: dict) -> str:
    """The report as markdown: command, machine and date, settings, the table, the ranking."""
    a, m = report["all"], report["machine"]
    lines = ["# Per-layer quantization sensitivity", "", "```sh", report["command"], "```", "",
             f"Run {report['started']} on {m['node']} ({m['processor']}, {m['cpus']} CPUs, "
             f"{m['torch_threads']} torch thread(s)), {report['seconds'] / 60:.1f} min; "
             f"bundle {report['bundle']['content_hash'][:12]}.", "",
             f"{report['images']} images x {report['views_per_image']} view(s) = "
             f"{report['views']} inputs (seed {report['seed']}); the float model gives "
             f"{report['float_boxes']} boxes at score >= {AGREE_CONF}. Fidelity: mAP@0.5:0.95 "
             "against those boxes; SQNR: of both heads' values together (one head alone can be "
             "exact), mean over the inputs, dB."
             + (f" Intervals: 95 % cluster bootstrap over the images "
                f"({report['bootstrap']['resamples']} resamples), paired for differences."
                if "bootstrap" in report else ""), "",
             "A quantized conv layer has the bundle's integer weights, integer bias and "
             "output requantization (rounding to its power-of-two grid, leaky 13/128, "
             "saturation); a float one the float weights the bundle rounds, leaky 0.1, and "
             "keeps its output's real values. The input unit is the image's int8 "
             "quantization. \"only U\": U quantized, the rest float; \"all but U\": U float, "
             "the rest quantized; \"all\": the bundle (golden model), bit for bit.", "",
             f"**all quantized**: fidelity {a['fidelity50_95']:.4f}{_ci(a, 'fidelity50_95')}, "
             f"head SQNR {a['head_sqnr_db']:.1f} dB.", "",
             "| unit | layer | only U: fidelity | only U: SQNR | all but U: fidelity "
             "| all but U - all | all but U: SQNR |",
             "|---|---|---|---|---|---|---|"]
    for r in report["units"]:
        o, b = r["only"], r["all_but"]
        gain = b["fidelity50_95"] - a["fidelity50_95"]
        lines.append(f"| {r['name']} | {r['layer']} | {o['fidelity50_95']:.4f}"
                     f"{_ci(o, 'fidelity50_95')} | {o['head_sqnr_db']:.1f} | "
                     f"{b['fidelity50_95']:.4f}{_ci(b, 'fidelity50_95')} | {gain:+.4f}"
                     f"{_ci(b, 'diff50_95')} | {b['head_sqnr_db']:.1f} |")
    lines += ["", "Most sensitive first (fidelity recovered by running that unit in float):",
              ""]
    for k, r in enumerate(ranking(report)[:5], 1):
        gain = r["all_but"]["fidelity50_95"] - a["fidelity50_95"]
        lines.append(f"{k}. {r['name']} ({r['layer']}): {gain:+.4f}"
                     f"{_ci(r['all_but'], 'diff50_95')}; alone it gives fidelity "
                     f"{r['only']['fidelity50_95']:.4f}, {r['only']['head_sqnr_db']:.1f} dB")
    return "\n".join(lines) + "\n"


def _yerr(rows: list[dict], key: str, center: np.ndarray,
          f: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> np.ndarray | None:
    """Error bars (2 x n) around `center` of the rows' bootstrap intervals `key` mapped by
    `f`; None without intervals."""
    if not all("ci" in r and key in r["ci"] for r in rows):
        return None
    iv = np.sort(f(np.array([r["ci"][key] for r in rows], np.float64)), axis=1)
    return np.clip(np.stack([center - iv[:, 0], iv[:, 1] - center]), 0, None)


def plot(report: dict) -> bytes:
    """PNG: per unit, 1 - fidelity and head SQNR with only it quantized (top), and the
    fidelity and SQNR recovered with only it in float (bottom)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    us = report["units"]
    names = [r["name"].replace("layer ", "") for r in us]
    x = np.arange(len(us))
    a = report["all"]
    only = [r["only"] for r in us]
    but = [r["all_but"] for r in us]
    loss = 1 - np.array([r["fidelity50_95"] for r in only])
    gain = np.array([r["fidelity50_95"] for r in but]) - a["fidelity50_95"]
    fig, ax = plt.subplots(2, 2, figsize=(12, 7))
    ax[0, 0].bar(x, loss, yerr=_yerr(only, "fidelity50_95", loss, lambda v: 1 - v),
                 color="tab:red", capsize=2)
    ax[0, 0].set_ylabel("1 - fidelity")
    ax[0, 0].set_title("only this unit quantized: fidelity lost")
    ax[0, 1].bar(x, [r["head_sqnr_db"] for r in only], color="tab:orange")
    ax[0, 1].set_ylabel("head SQNR, dB")
    ax[0, 1].set_title("only this unit quantized: head SQNR")
    ax[1, 0].bar(x, gain, yerr=_yerr(but, "diff50_95", gain), color="tab:green", capsize=2)
    ax[1, 0].set_ylabel("fidelity - fidelity(all)")
    ax[1, 0].set_title(f"this unit float, the rest quantized: fidelity recovered "
                       f"(all: {a['fidelity50_95']:.3f})")
    ax[1, 1].bar(x, [r["head_sqnr_db"] - a["head_sqnr_db"] for r in but], color="tab:blue")
    ax[1, 1].set_ylabel("SQNR - SQNR(all), dB")
    ax[1, 1].set_title(f"this unit float: head SQNR gained (all: {a['head_sqnr_db']:.1f} dB)")
    for axis in ax.flat:
        axis.set_xticks(x, names, fontsize=8)
        axis.set_xlabel("unit (conv layer index)")
        axis.axhline(0, color="black", lw=0.8)
        axis.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write(report: dict, out: Path) -> str:
    """OUT.md, OUT.png and OUT.json of a report; returns the markdown."""
    md = markdown(report)
    write_report(out, report, md, plot(report))
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sw.eval.sensitivity",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="folder of images (labels not needed)")
    p.add_argument("--skip", type=int, default=0, metavar="K",
                   help="leave out the first K images (sorted by name); --skip 64 holds out "
                        "the default bundle's calibration images of coco-train128")
    p.add_argument("--limit", type=int, help="use only the first N images (after --skip)")
    p.add_argument("--views", type=int, default=1, help="views per image (default 1)")
    p.add_argument("--bundle", default="default",
                   help="bundle file, or 'default' (the default bundle)")
    p.add_argument("--calib", help="calibration images of an equalized --bundle file (to "
                                   "rebuild the float weights it rounds)")
    p.add_argument("--hw-config", help="HwConfig JSON (for 'default')")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the bootstrap")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="cluster-bootstrap intervals from N resamples (0: off)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=Path("docs/sensitivity"),
                   help="output prefix: OUT.md, OUT.png, OUT.json (default docs/sensitivity)")
    args = p.parse_args(argv)
    if args.views < 1 or args.skip < 0 or args.bootstrap < 0 or (args.limit or 1) < 1 \
            or args.threads < 1:
        p.error("--views, --limit and --threads must be >= 1, --skip and --bootstrap >= 0")
    command = "python -m sw.eval.sensitivity " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    try:
        files = image_files(args.images)[args.skip:]
        files = files[:args.limit] if args.limit else files
        if not files:
            raise FileNotFoundError(f"{args.images}: no images left after --skip {args.skip}")
        path = default_bundle(load_config(args.hw_config)) if args.bundle == "default" \
            else Path(args.bundle)
        bundle = Bundle.load(path)
        net, model, _ = load_float()
        calib = letterboxed(image_files(args.calib), net.width) if args.calib else None
        reference = rounded_model(bundle, model, calib)
        log(f"sensitivity of {len(units(bundle))} units on {len(files)} images x "
            f"{args.views} views ...")
        report = evaluate(files, bundle, reference, args.views, args.seed, args.bootstrap,
                          command)
    except (ValueError, ImageError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(write(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
