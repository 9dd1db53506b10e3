"""Quantization-aware training by distillation, with fixed power-of-two scales.

Starts from a PTQ bundle (its scales: f_in, f_w per channel, f_out) and the float
network (batch norm folded). The student computes exactly the hardware's arithmetic
(weights and biases rounded to their integer grids, `intmath.requant_real` for
requantization, leaky 13/128, saturation) with straight-through gradients around every
rounding, and learns the float weights and biases so that its detection heads match the
float teacher's on unlabeled images. `export()` rounds the learned parameters with the
same functions the PTQ uses, so the exported bundle runs bit-exactly in the golden model.

Weight scales stay those of the PTQ bundle. Activation scales either stay fixed too, or
(`learn_scales=True`) are learned as log2 thresholds in the spirit of TQT (Jain et al.
2019): each int8 activation tensor has a trainable t = log2(threshold), its power-of-two
scale is 2**(ceil(t) - (act_bits - 1)) (ceil with a straight-through gradient), so the
gradient on t trades rounding error inside the range against clipping error outside it.
Tensors that a route concatenates share one t; the detection heads keep their scale.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hw.spec import intmath
from sw.quant.model import FloatModel, image_tensor, run_graph, ste_floor
from sw.runtime.bundle import Bundle
from sw.runtime.graph import scale_groups, scale_roots

__all__ = ["LOSSES", "QATModel", "QatOptions", "distill", "head_distillation_loss",
           "head_mse_loss"]


def _ste_ceil(t: torch.Tensor) -> torch.Tensor:
    return -ste_floor(-t)


class QATModel(torch.nn.Module):
    """The hardware's integer arithmetic with trainable weights and biases (float32)."""

    def __init__(self, teacher: FloatModel, bundle: Bundle, learn_scales: bool = False):
        super().__init__()
        self.bundle = bundle
        self.kinds = bundle.layers
        self.weight = torch.nn.ParameterDict()
        self.bias = torch.nn.ParameterDict()
        for i, (w, _) in teacher.fused_params().items():
            # biases start at the bundle's (bias-corrected) values, weights at the float
            # ones, which round to the bundle's integers: the student starts as the PTQ
            b = bundle.bias(i) * np.exp2(-(bundle.f_w(i) + self.kinds[i]["f_in"]))
            self.weight[str(i)] = torch.nn.Parameter(torch.from_numpy(w).float())
            self.bias[str(i)] = torch.nn.Parameter(torch.from_numpy(b).float())
        self.f_w = {i: torch.from_numpy(bundle.f_w(i)).float()
                    for i, layer in enumerate(self.kinds) if layer["kind"] == "conv"}
        cfg = bundle.numerics
        self.w_max, self.bias_limit = cfg.weight_max, cfg.bias_limit
        # Activation scales: one log2 threshold per scale group (heads excluded), starting
        # at the bundle's f_out: t = (act_bits - 1) - f_out.
        heads = set(bundle.head_indices)
        self.groups = [g for g in scale_groups(self.kinds) if not heads & set(g)]
        self.group_of = {i: n for n, g in enumerate(self.groups) for i in g}
        self.top_bit = cfg.act_bits - 1
        self.log2t = torch.nn.Parameter(
            torch.tensor([float(self.top_bit - self.kinds[g[0]]["f_out"]) for g in self.groups]),
            requires_grad=learn_scales)
        self.learn_scales = learn_scales
        self._f: dict[int, torch.Tensor | int] = {}

    def frac_bits(self) -> dict[int, torch.Tensor | int]:
        """f_out of every conv layer: learned (integer-valued tensor) or the bundle's.

        Kept within the requantizer's shift range given the (learned) input scale:
        f_in + max f_w - max_shift <= f_out <= f_in + min f_w, which moves a head's
        fixed scale with its input's; a shared group takes its first layer's bounds.
        """
        f: dict[int, torch.Tensor | int] = {}
        done: dict[int, torch.Tensor] = {}
        max_shift = self.bundle.numerics.max_shift
        for i, layer in enumerate(self.kinds):
            if layer["kind"] != "conv":
                continue
            f_in, fw = self._f_in(i, f), self.bundle.f_w(i)
            lo, hi = f_in + int(fw.max()) - max_shift, f_in + int(fw.min())
            g = self.group_of.get(i)
            if self.learn_scales and g is not None:
                if g not in done:
                    done[g] = (self.top_bit - _ste_ceil(self.log2t[g])).clamp(lo, hi)
                f[i] = done[g]
            else:
                f[i] = min(max(int(layer["f_out"]), lo), hi)
        return f

    def _f_in(self, i: int, f: dict[int, torch.Tensor | int]) -> int:
        roots = scale_roots(self.kinds, i - 1)
        if not roots:
            return self.bundle.input_frac_bits
        v = f[roots[0]]
        return round(float(v.detach() if isinstance(v, torch.Tensor) else v))

    def _grid(self, x: torch.Tensor, f: torch.Tensor, limit: int) -> torch.Tensor:
        """x rounded to the grid 2**-f (per output channel) and saturated, with STE."""
        scale = torch.exp2(f).reshape(-1, *([1] * (x.dim() - 1)))
        q = ste_floor(x * scale + 0.5).clamp(-limit, limit)
        return q / scale

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.kinds[i]
        fw = self.f_w[i]
        f_out = self._f[i]
        w = self._grid(self.weight[str(i)], fw, self.w_max)
        b = self._grid(self.bias[str(i)], fw + self._f_in(i, self._f), self.bias_limit)
        acc = F.conv2d(x, w, b, layer["stride"], layer["pad"])
        leaky = layer["activation"] == "leaky"
        # a learned f_out is a tensor: the rounding error (in range) and the clipping error
        # (saturated) reach its log2 threshold through requant_real's arithmetic
        q = intmath.requant_real(acc, f_out, leaky, layer["out_bits"], floor=ste_floor)
        return q * 2.0 ** -f_out

    def forward(self, x_int: torch.Tensor) -> list[torch.Tensor]:
        """x_int: int8-valued N x 3 x H x W (float); returns the detection heads."""
        self._f = self.frac_bits()
        x = x_int * 2.0 ** -self.bundle.input_frac_bits
        outs = run_graph(self.kinds, x, self._conv)
        return [outs[i] for i in self.bundle.head_indices]

    def export(self, provenance: dict | None = None) -> Bundle:
        """The learned parameters as a bundle (same scales and graph as the PTQ one)."""
        cfg = self.bundle.numerics
        manifest = copy.deepcopy(self.bundle.manifest)
        arrays = dict(self.bundle.arrays)
        with torch.no_grad():
            f = {i: round(float(v)) for i, v in self.frac_bits().items()}
        layers = manifest["layers"]
        for j, layer in enumerate(layers):     # every tensor's scale from its root convs
            if layer["kind"] == "conv":
                layer["f_in"], layer["f_out"] = self._f_in(j, f), f[j]
            elif layer["kind"] != "yolo":
                layer["f_out"] = f[scale_roots(self.kinds, j)[0]]
        for key, p in self.weight.items():
            i = int(key)
            fw = self.bundle.f_w(i)
            w = p.detach().double().numpy()
            b = self.bias[key].detach().double().numpy()
            wq = intmath.quantize(w, fw[:, None, None, None], cfg.weight_bits, symmetric=True)
            bq = np.clip(intmath.quantize(b, fw + layers[i]["f_in"], cfg.acc_bits),
                         -cfg.bias_limit, cfg.bias_limit)
            arrays[f"l{i}.weight"] = wq.transpose(0, 2, 3, 1).astype(np.int8)
            arrays[f"l{i}.bias"] = bq.astype(np.int32)
        manifest["quantization"] = {**manifest["quantization"], "qat": provenance or {}}
        return Bundle(manifest, arrays).seal()   # validates shifts and shared route scales


def head_distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                           num_classes: int) -> torch.Tensor:
    """Match the teacher's detections: BCE on objectness, and, weighted by the teacher's
    objectness, BCE on class probabilities and squared error on box offsets (tx..th)."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        n, c, h, w = s.shape
        per = 5 + num_classes
        s = s.reshape(n, c // per, per, h, w)
        t = t.reshape(n, c // per, per, h, w)
        t_obj = torch.sigmoid(t[:, :, 4])
        obj = F.binary_cross_entropy_with_logits(s[:, :, 4], t_obj)
        weight = t_obj.unsqueeze(2)
        box = (weight * (s[:, :, :4] - t[:, :, :4]) ** 2).sum() / weight.sum().clamp_min(1.0)
        cls = (weight * F.binary_cross_entropy_with_logits(
            s[:, :, 5:], torch.sigmoid(t[:, :, 5:]), reduction="none")).sum() \
            / (weight.sum().clamp_min(1.0) * num_classes)
        total = total + obj + box + cls
    return total


def head_mse_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                  num_classes: int = 0) -> torch.Tensor:
    """Relative squared error of the raw head outputs, summed over heads: the quantity
    whose inverse the evaluation reports as head SQNR."""
    return sum(((s - t) ** 2).mean() / (t ** 2).mean().clamp_min(1e-12)
               for s, t in zip(student, teacher, strict=True))


LOSSES = {"detect": head_distillation_loss, "mse": head_mse_loss}


@dataclass(frozen=True)
class QatOptions:
    steps: int = 200
    batch: int = 4
    lr: float = 1e-5
    #: Adam learning rate of the log2 thresholds (QATModel(learn_scales=True)); one unit
    #: of t is one bit of scale, so it needs a far larger rate than the weights
    scale_lr: float = 1e-2
    #: distillation loss: "detect" (head_distillation_loss) or "mse" (head_mse_loss)
    loss: str = "detect"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")


def distill(student: QATModel, teacher: FloatModel, images: Sequence[np.ndarray],
            opts: QatOptions = QatOptions(),
            log: Callable[[str], None] | None = None) -> list[float]:
    """Train the student on letterboxed uint8 HWC images (random flips); returns losses."""
    if not images:
        raise ValueError("QAT needs at least one image")
    rng = np.random.default_rng(opts.seed)
    classes = student.bundle.layers[-1].get("classes", 80)
    weights = [p for n, p in student.named_parameters() if n != "log2t"]
    groups = [{"params": weights, "lr": opts.lr}]
    if student.learn_scales:
        groups.append({"params": [student.log2t], "lr": opts.scale_lr})
    optim = torch.optim.Adam(groups)
    teacher.eval()
    losses: list[float] = []
    t0 = time.time()
    for step in range(1, opts.steps + 1):
        pick = rng.choice(len(images), min(opts.batch, len(images)), replace=False)
        batch = []
        for k in pick:
            img = images[k][:, ::-1] if rng.random() < 0.5 else images[k]
            batch.append(np.ascontiguousarray(img))
        u8 = np.stack(batch)
        x_float = image_tensor(u8)
        x_int = torch.from_numpy(intmath.quantize_input(u8)).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            target = teacher.heads(x_float)
        loss = LOSSES[opts.loss](student(x_int), target, classes)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if log and (step % 10 == 0 or step == opts.steps):
            log(f"  QAT step {step}/{opts.steps}: loss {np.mean(losses[-10:]):.4f} "
                f"({time.time() - t0:.0f} s)")
    return losses


def main(argv: list[str] | None = None) -> int:
    """`python -m sw.quant.qat --images DIR --out qat.npz`: distill a PTQ bundle on unlabeled
    images."""
    import argparse
    import sys
    from pathlib import Path

    from hw.spec.config import load_config
    from sw.quant.pipeline import default_bundle, load_float
    from sw.runtime.bundle import BundleError
    from sw.runtime.postprocess import ImageError, letterbox, load_image
    from sw.runtime.util import image_files, log
    from sw.runtime.weights import WeightsError

    p = argparse.ArgumentParser(prog="python -m sw.quant.qat", description=main.__doc__)
    p.add_argument("--images", required=True, help="folder of unlabeled training images")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.add_argument("--bundle", help="PTQ bundle to start from (default: the default bundle)")
    p.add_argument("--hw-config", help="HwConfig JSON")
    p.add_argument("--steps", type=int, default=QatOptions().steps)
    p.add_argument("--batch", type=int, default=QatOptions().batch)
    p.add_argument("--lr", type=float, default=QatOptions().lr)
    p.add_argument("--loss", choices=sorted(LOSSES), default=QatOptions().loss,
                   help="distillation loss: detect (objectness/class BCE, box error) or mse "
                        "(relative squared error of the raw heads)")
    p.add_argument("--learn-scales", action="store_true",
                   help="also learn the activations' power-of-two scales (log2 thresholds)")
    p.add_argument("--scale-lr", type=float, default=QatOptions().scale_lr,
                   help="learning rate of the log2 thresholds")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or not args.lr > 0 or not args.scale_lr > 0:
        p.error("--steps and --batch must be >= 1, --lr and --scale-lr > 0")
    try:
        hw = load_config(args.hw_config)
        start = Bundle.load(args.bundle or default_bundle(hw), expect=hw)
        _, teacher, _ = load_float()
        size = start.input_shape[0]
        files = image_files(args.images)
        log(f"loading {len(files)} training images ...")
        imgs = [letterbox(load_image(f), size)[0] for f in files]
    except (BundleError, ImageError, FileNotFoundError, ValueError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    opts = QatOptions(steps=args.steps, batch=args.batch, lr=args.lr, scale_lr=args.scale_lr,
                      loss=args.loss)
    student = QATModel(teacher, start, learn_scales=args.learn_scales)
    distill(student, teacher, imgs, opts, log)
    try:
        bundle = student.export({"steps": opts.steps, "batch": opts.batch, "lr": opts.lr,
                                 "learn_scales": args.learn_scales, "scale_lr": opts.scale_lr,
                                 "loss": opts.loss,
                                 "images": [f.name for f in files]})
    except BundleError as e:
        print(f"error: the learned scales break a hardware constraint: {e}", file=sys.stderr)
        return 1
    if args.learn_scales:
        changed = [f"{g[0]}: {start.layers[g[0]]['f_out']} -> {bundle.layers[g[0]]['f_out']}"
                   for g in student.groups
                   if bundle.layers[g[0]]["f_out"] != start.layers[g[0]]["f_out"]]
        log(f"learned scales: {len(changed)} of {len(student.groups)} activation scales "
            f"changed" + (f" (layer: f_out {', '.join(changed)})" if changed else ""))
    bundle.save(Path(args.out))
    log(f"QAT bundle written to {args.out} (hash {bundle.content_hash[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
