"""Quantization-aware training by distillation, with fixed power-of-two scales.

Starts from a PTQ bundle (its scales: f_in, f_w per channel, f_out) and the float
network (batch norm folded). The student computes exactly the hardware's arithmetic
(weights and biases rounded to their integer grids, `intmath.requant_real` for
requantization, leaky 13/128, saturation) with straight-through gradients around every
rounding, and learns the float weights and biases so that its detection heads match the
float teacher's on unlabeled images. `export()` rounds the learned parameters with the
same functions the PTQ uses, so the exported bundle runs bit-exactly in the golden model.

Scales stay those of the PTQ bundle (observers frozen); learned log2 thresholds are not
implemented yet.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sw import intmath
from sw.bundle import Bundle
from sw.model import FloatModel, run_graph

__all__ = ["QATModel", "QatOptions", "distill", "head_distillation_loss"]


class QATModel(torch.nn.Module):
    """The hardware's integer arithmetic with trainable weights and biases (float32)."""

    def __init__(self, teacher: FloatModel, bundle: Bundle):
        super().__init__()
        self.bundle = bundle
        self.kinds = bundle.layers
        self.weight = torch.nn.ParameterDict()
        self.bias = torch.nn.ParameterDict()
        self.kinds = bundle.layers
        for i, (w, _) in teacher.fused_params().items():
            # biases start at the bundle's (bias-corrected) values, weights at the float
            # ones, which round to the bundle's integers: the student starts as the PTQ
            b = bundle.bias(i) * np.exp2(-(bundle.f_w(i) + self.kinds[i]["f_in"]))
            self.weight[str(i)] = torch.nn.Parameter(torch.from_numpy(w).float())
            self.bias[str(i)] = torch.nn.Parameter(torch.from_numpy(b).float())
        self.f_w = {i: torch.from_numpy(bundle.f_w(i)).float()
                    for i, layer in enumerate(self.kinds) if layer["kind"] == "conv"}
        cfg = bundle.config
        self.w_max, self.bias_limit = cfg.weight_max, cfg.bias_limit

    def _grid(self, x: torch.Tensor, f: torch.Tensor, limit: int) -> torch.Tensor:
        """x rounded to the grid 2**-f (per output channel) and saturated, with STE."""
        scale = torch.exp2(f).reshape(-1, *([1] * (x.dim() - 1)))
        q = intmath.ste_floor(x * scale + 0.5).clamp(-limit, limit)
        return q / scale

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.kinds[i]
        fw = self.f_w[i]
        w = self._grid(self.weight[str(i)], fw, self.w_max)
        b = self._grid(self.bias[str(i)], fw + layer["f_in"], self.bias_limit)
        acc = F.conv2d(x, w, b, layer["stride"], layer["pad"])
        q = intmath.requant_real(acc, layer["f_out"], layer["activation"] == "leaky",
                                 layer["out_bits"], ste=True)
        return q * 2.0 ** -layer["f_out"]

    def forward(self, x_int: torch.Tensor) -> list[torch.Tensor]:
        """x_int: int8-valued N x 3 x H x W (float); returns the detection heads."""
        x = x_int * 2.0 ** -self.bundle.input_frac_bits
        outs = run_graph(self.kinds, x, self._conv)
        return [outs[i] for i in self.bundle.head_indices]

    def export(self, provenance: dict | None = None) -> Bundle:
        """The learned parameters as a bundle (same scales and graph as the PTQ one)."""
        cfg = self.bundle.config
        manifest = copy.deepcopy(self.bundle.manifest)
        arrays = dict(self.bundle.arrays)
        for key, p in self.weight.items():
            i = int(key)
            fw = self.bundle.f_w(i)
            w = p.detach().double().numpy()
            b = self.bias[key].detach().double().numpy()
            wq = intmath.quantize(w, fw[:, None, None, None], cfg.weight_bits, symmetric=True)
            bq = np.clip(intmath.quantize(b, fw + self.kinds[i]["f_in"], cfg.acc_bits),
                         -cfg.bias_limit, cfg.bias_limit)
            arrays[f"l{i}.weight"] = wq.transpose(0, 2, 3, 1).astype(np.int8)
            arrays[f"l{i}.bias"] = bq.astype(np.int32)
        manifest["quantization"] = {**manifest["quantization"], "qat": provenance or {}}
        return Bundle(manifest, arrays).seal()


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


@dataclass(frozen=True)
class QatOptions:
    steps: int = 200
    batch: int = 4
    lr: float = 1e-5
    seed: int = 0


def distill(student: QATModel, teacher: FloatModel, images: Sequence[np.ndarray],
            opts: QatOptions = QatOptions(),
            log: Callable[[str], None] | None = None) -> list[float]:
    """Train the student on letterboxed uint8 HWC images (random flips); returns losses."""
    if not images:
        raise ValueError("QAT needs at least one image")
    rng = np.random.default_rng(opts.seed)
    classes = student.bundle.layers[-1].get("classes", 80)
    optim = torch.optim.Adam(student.parameters(), lr=opts.lr)
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
        x_float = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
        x_int = torch.from_numpy(intmath.quantize_input(u8)).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            target = teacher.heads(x_float)
        loss = head_distillation_loss(student(x_int), target, classes)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        if log and (step % 10 == 0 or step == opts.steps):
            log(f"  QAT step {step}/{opts.steps}: loss {np.mean(losses[-10:]):.4f} "
                f"({time.time() - t0:.0f} s)")
    return losses


def main(argv: list[str] | None = None) -> int:
    """`python -m sw.qat --images DIR --out qat.npz`: distill a PTQ bundle on unlabeled images."""
    import argparse
    import sys
    from pathlib import Path

    from hw.config import load_config
    from sw.bundle import BundleError
    from sw.pipeline import default_bundle, image_files, load_float, log
    from sw.postprocess import ImageError, letterbox, load_image
    from sw.weights import WeightsError

    p = argparse.ArgumentParser(prog="python -m sw.qat", description=main.__doc__)
    p.add_argument("--images", required=True, help="folder of unlabeled training images")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.add_argument("--bundle", help="PTQ bundle to start from (default: the default bundle)")
    p.add_argument("--hw-config", help="HwConfig JSON")
    p.add_argument("--steps", type=int, default=QatOptions().steps)
    p.add_argument("--batch", type=int, default=QatOptions().batch)
    p.add_argument("--lr", type=float, default=QatOptions().lr)
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or not args.lr > 0:
        p.error("--steps and --batch must be >= 1 and --lr > 0")
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
    opts = QatOptions(steps=args.steps, batch=args.batch, lr=args.lr)
    student = QATModel(teacher, start)
    distill(student, teacher, imgs, opts, log)
    bundle = student.export({"steps": opts.steps, "batch": opts.batch, "lr": opts.lr,
                             "images": [f.name for f in files]})
    bundle.save(Path(args.out))
    log(f"QAT bundle written to {args.out} (hash {bundle.content_hash[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
