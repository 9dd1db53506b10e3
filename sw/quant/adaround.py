"""AdaRound: learned up/down rounding of a PTQ bundle's integer weights.

Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization".
Every conv layer's integer weights become floor(w * 2**f_w) + h, h in {0, 1}, with h
learned instead of taken from nearest rounding. During optimization h is the rectified
sigmoid h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1) of a free variable V
(started at the fractional part, so the soft weights start at the float weights); the
loss is the layer's reconstruction error plus a regularizer sum(1 - |2h - 1|**beta)
that, with beta annealed from 20 to 2 after a warm-up, drives every h to 0 or 1.

The reconstruction target is the float model's output of the layer (after its
activation); the input is the quantized network's own output so far (the golden
integer model of the bundle with the layers before already rounded), so each layer
also absorbs the error of the layers before it. The prediction is the hardware's
arithmetic without the final output rounding: integer weights at 2**-f_w, the bias on
its integer grid, leaky slope 13/128, saturation at the output range. Rows are a random
sample of output positions per image (`AdaRoundOptions.positions`).

Scales stay those of the bundle (f_in, f_w, f_out, hence every shift); only the integer
weights change, each by at most one step from nearest rounding, and the biases (on their
integer grid). By default (`learn_bias`, an addition to the paper) the bias is learned
with the rounding, starting at the PTQ's bias-corrected one, and refitted to the hard
rounding at the end: with few, coarse weights per output (layer 0: 27) the up/down
choices alone cannot shift an output's mean finely. Without it the bias is the float
bias on its grid. A layer whose hard-rounded loss is not below the PTQ bundle's keeps
the PTQ's weights and bias, so no layer's reconstruction loss on the data increases.

For bundles built with activation equalization or grid fill (`sw.quant.tune`) the float
weights the bundle rounds are those of the equalized model; `reference_model` rebuilds
it from the calibration images the same way `sw.quant.quantize_network` does.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from hw.spec import intmath
from sw.quant import tune
from sw.quant.model import FloatModel, image_tensor
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import Network
from sw.runtime.golden import GoldenModel, host_layer, im2col
from sw.runtime.graph import network_kinds
from sw.runtime.util import Progress, set_quiet

__all__ = ["AdaRoundOptions", "LayerResult", "adaround", "check_match", "layer_loss",
           "rectified_sigmoid", "reference_model", "reference_transform",
           "rounding_regularizer"]

#: Stretch of the rectified sigmoid (the paper's zeta, gamma).
ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundOptions:
    iters: int = 1000           # Adam steps per layer
    batch: int = 256            # rows (output positions) per step
    lr: float = 3e-2            # Adam learning rate of V
    reg: float = 0.01           # weight of the rounding regularizer (lambda)
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2         # fraction of the steps without regularizer
    positions: int = 256        # sampled output positions per image and layer
    learn_bias: bool = True     # learn the bias with the rounding (from the PTQ bias)
    bias_lr: float = 1e-3       # Adam learning rate of the (real) bias
    bias_iters: int = 100       # steps refitting the bias to the hard-rounded weights
    flip: bool = False          # also use the horizontally mirrored images (twice the rows)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iters < 1 or self.batch < 1 or self.positions < 1:
            raise ValueError("iters, batch and positions must be >= 1")
        if not (self.lr > 0 and self.bias_lr > 0 and self.reg >= 0):
            raise ValueError("lr and bias_lr must be > 0, reg >= 0")
        if self.bias_iters < 0:
            raise ValueError("bias_iters must be >= 0")
        if not 0 <= self.warmup < 1:
            raise ValueError("warmup must lie in [0, 1)")
        if not self.beta_start >= self.beta_end > 0:
            raise ValueError("need beta_start >= beta_end > 0")


@dataclass
class LayerResult:
    """Per conv layer: reconstruction losses (mean squared error of the layer output
    against float on the sampled rows) of the PTQ bundle and of the learned rounding."""

    layer: int
    rows: int
    weights: int
    loss_ptq: float
    loss_ada: float
    changed: int        # integer weights that differ from the PTQ bundle's
    kept: bool          # True: the learned rounding was adopted
    seconds: float


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) in [0, 1]: the paper's stretched and clipped sigmoid."""
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def _inverse_h(frac: np.ndarray) -> np.ndarray:
    """V with h(V) = frac for frac in [0, 1)."""
    p = (np.asarray(frac, np.float64) - GAMMA) / (ZETA - GAMMA)
    return np.log(p / (1 - p))


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over weights of 1 - |2h - 1|**beta: 0 exactly when every h is 0 or 1."""
    return (1 - (2 * h - 1).abs().pow(beta)).mean()


def layer_loss(x: torch.Tensor, w_int: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
               leaky: bool, lo: float, hi: float, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the layer output (hardware arithmetic, output rounding left
    out) against y. x: rows x K inputs, w_int: Cout x K integer-valued weights at scale
    1/scale (Cout), bias: real (Cout), [lo, hi]: the real output range."""
    acc = x @ (w_int / scale[:, None]).T + bias
    if leaky:
        acc = torch.where(acc < 0, acc * (intmath.LEAKY_MUL / (1 << intmath.LEAKY_SHIFT)), acc)
    return ((acc.clamp(lo, hi) - y) ** 2).mean()


def _chunked_loss(x: torch.Tensor, w_int: torch.Tensor, scale: torch.Tensor,
                  bias: torch.Tensor, leaky: bool, lo: float, hi: float, y: torch.Tensor,
                  chunk: int = 4096) -> float:
    total = 0.0
    with torch.no_grad():
        for a in range(0, len(x), chunk):
            n = len(x[a:a + chunk])
            total += n * float(layer_loss(x[a:a + chunk], w_int, scale, bias, leaky, lo, hi,
                                          y[a:a + chunk]))
    return total / len(x)


def reference_transform(net: Network, model: FloatModel, bundle: Bundle,
                        calib: Sequence[np.ndarray] | None,
                        ) -> tuple[FloatModel, list[dict[int, np.ndarray]]]:
    """The float model whose weights the bundle rounds and the scale steps that made it
    (`sw.quant.tune.transform`): `model` itself and no step, or for bundles built with
    equalization / grid fill its transformed copy, rebuilt from the calibration images
    `calib` as `sw.quant.quantize_network` does."""
    q = bundle.manifest.get("quantization", {})
    alpha, fill = float(q.get("equalize", 0.0)), bool(q.get("fill", False))
    if not (alpha or fill):
        return model, []
    if not calib:
        raise ValueError("the bundle was built with equalization/fill: its float weights "
                         "need the calibration images (--calib)")
    model, steps, _ = tune.transform(net, model, calib, alpha, fill, bundle.numerics.act_bits,
                                     final_calibration=False)
    return model, steps


def reference_model(net: Network, model: FloatModel, bundle: Bundle,
                    calib: Sequence[np.ndarray] | None) -> FloatModel:
    """The float model whose weights the bundle rounds (see `reference_transform`)."""
    return reference_transform(net, model, bundle, calib)[0]


def _nearest(w: np.ndarray, fw: np.ndarray, bits: int) -> np.ndarray:
    """OIHW float weights to the bundle's OHWI integers by nearest rounding."""
    q = intmath.quantize(w, fw[:, None, None, None], bits, symmetric=True)
    return q.transpose(0, 2, 3, 1)


def check_match(net: Network, model: FloatModel, bundle: Bundle,
                tolerance: float = 1e-3) -> None:
    """ValueError unless the bundle is a PTQ rounding of `model` on `net`: the same layer
    graph and conv shapes, and (up to `tolerance`, a fraction of the weights) the
    bundle's integer weights are the float weights rounded to nearest at its f_w."""
    kinds = network_kinds(net)
    if len(kinds) != len(bundle.layers) or any(
            a["kind"] != b["kind"] for a, b in zip(kinds, bundle.layers, strict=True)):
        raise ValueError("the bundle's layer graph does not match the network")
    params = model.fused_params()
    bits = bundle.numerics.weight_bits
    for i in net.conv_indices:
        w = params[i][0]
        if bundle.weight(i).shape != (w.shape[0], w.shape[2], w.shape[3], w.shape[1]):
            raise ValueError(f"layer {i}: bundle weights {bundle.weight(i).shape} do not match "
                             f"the network's {tuple(w.shape)} (OIHW)")
        off = np.mean(_nearest(w, bundle.f_w(i), bits) != bundle.weight(i))
        if off > tolerance:
            raise ValueError(f"layer {i}: {off:.1%} of the bundle's weights are not the float "
                             "weights rounded to nearest (other weights or calibration images?)")


def _optimize(x: torch.Tensor, y: torch.Tensor, w: np.ndarray, scale: np.ndarray,
              bias: torch.Tensor, leaky: bool, lo: float, hi: float, w_max: int,
              norm: float, opts: AdaRoundOptions, gen: torch.Generator,
              ) -> tuple[np.ndarray, torch.Tensor]:
    """Learned integer weights (Cout x K) for float weights w (Cout x K) at scale, and the
    real bias: `bias` itself, or with `opts.learn_bias` learned from it jointly and then
    refitted to the hard-rounded weights (`opts.bias_iters` more steps)."""
    ws = w * scale[:, None]
    base = np.floor(ws)
    v = torch.nn.Parameter(torch.from_numpy(_inverse_h(ws - base)).float())
    b = torch.nn.Parameter(bias.clone(), requires_grad=opts.learn_bias)
    base_t = torch.from_numpy(base).float()
    scale_t = torch.from_numpy(scale).float()
    groups = [{"params": [v], "lr": opts.lr}]
    if opts.learn_bias:
        groups.append({"params": [b], "lr": opts.bias_lr})
    optim = torch.optim.Adam(groups)
    warm = int(opts.warmup * opts.iters)

    def rec(w_int: torch.Tensor) -> torch.Tensor:
        rows = torch.randint(0, len(x), (min(opts.batch, len(x)),), generator=gen)
        return layer_loss(x[rows], w_int, scale_t, b, leaky, lo, hi, y[rows]) / norm

    for t in range(opts.iters):
        h = rectified_sigmoid(v)
        loss = rec((base_t + h).clamp(-w_max, w_max))
        if t >= warm and opts.reg:
            rel = (t - warm) / max(1, opts.iters - warm)
            beta = opts.beta_end + (opts.beta_start - opts.beta_end) * (1 - rel)
            loss = loss + opts.reg * rounding_regularizer(h, beta)
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        w_int = np.clip(base + (rectified_sigmoid(v) >= 0.5).double().numpy(), -w_max, w_max)
    if opts.learn_bias and opts.bias_iters:
        hard = torch.from_numpy(w_int).float()
        optim = torch.optim.Adam([b], lr=opts.bias_lr)
        for _ in range(opts.bias_iters):
            loss = rec(hard)
            optim.zero_grad()
            loss.backward()
            optim.step()
    return w_int, b.detach()


def adaround(bundle: Bundle, model: FloatModel, images: Sequence[np.ndarray],
             opts: AdaRoundOptions = AdaRoundOptions(),
             log: Callable[[str], None] | None = None,
             ) -> tuple[Bundle, list[LayerResult]]:
    """Learn the rounding of every conv layer in network order on letterboxed uint8 HWC
    images; `model` is the float model the bundle rounds (see `reference_model`).
    Returns the new bundle (same scales) and per-layer results."""
    if not images:
        raise ValueError("AdaRound needs at least one image")
    if opts.flip:
        images = [*images, *(np.ascontiguousarray(img[:, ::-1]) for img in images)]
    cfg = bundle.numerics
    rng = np.random.default_rng(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    layers = bundle.layers
    convs = [i for i, layer in enumerate(layers) if layer["kind"] == "conv"]
    params = model.fused_params()

    # float targets at sampled output positions of every conv layer, per image
    pos: dict[int, list[np.ndarray]] = {i: [] for i in convs}
    target: dict[int, list[np.ndarray]] = {i: [] for i in convs}
    with torch.no_grad():
        for img in images:
            xf = image_tensor(img)
            outs = model(xf, keep=True)
            for i in convs:
                o = outs[i][0].flatten(1).numpy()           # C x (H * W)
                p = np.sort(rng.choice(o.shape[1], min(opts.positions, o.shape[1]),
                                       replace=False))
                pos[i].append(p)
                target[i].append(np.ascontiguousarray(o[:, p].T))

    work = Bundle(copy.deepcopy(bundle.manifest), dict(bundle.arrays))
    golden = GoldenModel(work)
    state: list[list[np.ndarray]] = [[] for _ in images]   # quantized outputs per image
    inputs = [intmath.quantize_input(img) for img in images]
    results: list[LayerResult] = []
    with Progress(len(convs), "AdaRound", unit="layer") as bar:
        for i, layer in enumerate(layers):
            if layer["kind"] != "conv":
                for n, outs in enumerate(state):
                    outs.append(host_layer(layer, outs[-1] if outs else inputs[n], outs))
                continue
            t0 = time.time()
            k, stride, pad = layer["size"], layer["stride"], layer["pad"]
            prev = [outs[-1] if outs else inputs[n] for n, outs in enumerate(state)]
            f_in, f_out = layer["f_in"], layer["f_out"]
            x = torch.from_numpy(np.concatenate([
                im2col(p.astype(np.float32), k, stride, pad)[pos[i][n]]
                for n, p in enumerate(prev)]) * np.float32(2.0 ** -f_in))
            y = torch.from_numpy(np.concatenate(target[i]))
            fw = work.f_w(i)
            scale = np.exp2(fw.astype(np.float64))
            w_float, b_float = params[i]
            w = w_float.transpose(0, 2, 3, 1).reshape(len(fw), -1)       # OHWI, as im2col
            lo, hi = intmath.int_range(layer["out_bits"])
            lo_r, hi_r = lo * 2.0 ** -f_out, hi * 2.0 ** -f_out
            leaky = layer["activation"] == "leaky"
            scale_t = torch.from_numpy(scale).float()

            bias_scale = np.exp2(-(f_in + fw.astype(np.float64)))

            def real_bias(bq: np.ndarray, bias_scale: np.ndarray = bias_scale) -> torch.Tensor:
                return torch.from_numpy(bq * bias_scale).float()

            w_ptq = work.weight(i).reshape(len(fw), -1).astype(np.float64)
            b_ptq = work.bias(i).astype(np.int64)
            loss_ptq = _chunked_loss(x, torch.from_numpy(w_ptq).float(), scale_t, real_bias(b_ptq),
                                     leaky, lo_r, hi_r, y)
            # the bias starts at the PTQ's (bias-corrected) one when it is learned, else it is
            # the float bias on its grid
            b_start = b_ptq if opts.learn_bias else np.clip(
                intmath.quantize(b_float, f_in + fw, cfg.acc_bits), -cfg.bias_limit, cfg.bias_limit)
            w_new, b_real = _optimize(x, y, w, scale, real_bias(b_start), leaky, lo_r, hi_r,
                                      cfg.weight_max, max(loss_ptq, 1e-30), opts, gen)
            b_new = np.clip(intmath.quantize(b_real.double().numpy(), f_in + fw, cfg.acc_bits),
                            -cfg.bias_limit, cfg.bias_limit)
            loss_ada = _chunked_loss(x, torch.from_numpy(w_new).float(), scale_t, real_bias(b_new),
                                     leaky, lo_r, hi_r, y)
            kept = loss_ada < loss_ptq
            if kept:
                work.arrays[f"l{i}.weight"] = w_new.reshape(work.weight(i).shape).astype(np.int8)
                work.arrays[f"l{i}.bias"] = b_new.astype(np.int32)
            res = LayerResult(i, len(x), w.size, loss_ptq, loss_ada,
                              int(np.sum(w_new != w_ptq)) if kept else 0, kept, time.time() - t0)
            results.append(res)
            bar.update()
            for n, outs in enumerate(state):
                outs.append(golden.conv(i, prev[n]))
            if log:
                log(f"layer {i:2d}: {res.rows} rows x {x.shape[1]} -> {len(fw)}, loss "
                    f"{loss_ptq:.4g} (PTQ) -> {loss_ada:.4g} (AdaRound, "
                    f"{_db(loss_ptq, loss_ada):+.2f} dB), "
                    f"{'adopted' if kept else 'kept PTQ'}, {res.changed} of {res.weights} "
                    f"weights changed, {time.time() - t0:.1f} s")
    manifest = work.manifest
    manifest["quantization"] = {**manifest["quantization"], "adaround": {
        **asdict(opts), "images": len(images),
        "adopted": [r.layer for r in results if r.kept]}}
    return Bundle(manifest, work.arrays).seal(), results


def _db(before: float, after: float) -> float:
    return 10 * math.log10(before / after) if before > 0 and after > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    """`python -m sw.quant.adaround --bundle IN.npz --images DIR --out OUT.npz`: learn the weight
    rounding of a PTQ bundle on unlabeled images (same scales)."""
    import argparse
    import sys
    from pathlib import Path

    from sw.quant.pipeline import load_float
    from sw.runtime.bundle import BundleError
    from sw.runtime.darknet import DarknetError
    from sw.runtime.postprocess import ImageError, letterbox, load_image
    from sw.runtime.util import image_files, log
    from sw.runtime.weights import WeightsError

    d = AdaRoundOptions()
    p = argparse.ArgumentParser(prog="python -m sw.quant.adaround", description=main.__doc__)
    p.add_argument("--bundle", required=True, help="PTQ bundle to start from")
    p.add_argument("--images", required=True, help="folder of unlabeled images")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.add_argument("--calib", help="calibration images of an equalized/filled bundle "
                                    "(default: --images)")
    p.add_argument("--cfg", help="Darknet cfg (default: the pretrained Tiny-YOLOv3 cfg)")
    p.add_argument("--weights", help="Darknet weights (default: the pretrained weights)")
    p.add_argument("--images-limit", type=int, help="use only the first K images")
    p.add_argument("--iters", type=int, default=d.iters, help="Adam steps per layer")
    p.add_argument("--batch", type=int, default=d.batch, help="rows per step")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--reg", type=float, default=d.reg, help="rounding regularizer weight")
    p.add_argument("--positions", type=int, default=d.positions,
                   help="sampled output positions per image and layer")
    p.add_argument("--no-learn-bias", action="store_true",
                   help="keep the float bias (on its grid) instead of learning it")
    p.add_argument("--bias-lr", type=float, default=d.bias_lr)
    p.add_argument("--flip", action="store_true",
                   help="also use the horizontally mirrored images (twice the rows)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    set_quiet(args.quiet)
    if args.images_limit is not None and args.images_limit < 1:
        p.error("--images-limit must be >= 1")
    try:
        opts = replace(d, iters=args.iters, batch=args.batch, lr=args.lr, reg=args.reg,
                       positions=args.positions, seed=args.seed,
                       learn_bias=not args.no_learn_bias, bias_lr=args.bias_lr,
                       flip=args.flip)
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(1)
    try:
        start = Bundle.load(args.bundle)
        net, model, _ = load_float(args.cfg, args.weights)
        size = start.input_shape[0]
        files = image_files(args.images)[:args.images_limit]
        log(f"loading {len(files)} images ...")
        imgs = [letterbox(load_image(f), size)[0] for f in files]
        q = start.manifest.get("quantization", {})
        calib = None
        if q.get("equalize") or q.get("fill"):
            cfiles = image_files(args.calib or args.images)
            log(f"rebuilding the equalized float model from {len(cfiles)} calibration images")
            calib = [letterbox(load_image(f), size)[0] for f in cfiles]
        ref = reference_model(net, model, start, calib)
        check_match(net, ref, start)
    except (BundleError, DarknetError, ImageError, FileNotFoundError, ValueError,
            WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    bundle, results = adaround(start, ref, imgs, opts, log)
    bundle.manifest["quantization"]["adaround"]["image_names"] = [f.name for f in files]
    try:
        bundle.save(Path(args.out))
    except OSError as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 1
    adopted = sum(r.kept for r in results)
    log(f"AdaRound: {adopted} of {len(results)} layers adopted, {time.time() - t0:.0f} s; "
        f"bundle written to {args.out} (hash {bundle.content_hash[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
