"""AdaRound (sw.quant.adaround): only the rounding of the integer weights changes, no layer's
reconstruction loss rises, and the exported bundle stays bit-exact in the golden model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hw.spec import intmath
from sw.quant.adaround import (
    AdaRoundOptions,
    _inverse_h,
    adaround,
    check_match,
    layer_loss,
    main,
    rectified_sigmoid,
    reference_model,
    rounding_regularizer,
)
from sw.quant.model import FakeQuantModel, FloatModel
from sw.quant.ptq import QuantOptions
from sw.runtime.golden import GoldenModel, im2col
from tests.conftest import random_images, random_params, small_bundle

FAST = AdaRoundOptions(iters=60, batch=64, positions=2048, bias_iters=20)


@pytest.fixture(scope="module")
def rounded(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    imgs = random_images(3, small_net.width, seed=7)
    ada, results = adaround(ptq, small_model, imgs, FAST)
    return ptq, ada, results, imgs


def test_only_the_rounding_changes(small_net, small_model, rounded):
    ptq, ada, results, _ = rounded
    assert ada.layers == ptq.layers                      # f_in, f_out, graph
    params = small_model.fused_params()
    w_max = ptq.numerics.weight_max
    for i in small_net.conv_indices:
        assert np.array_equal(ada.f_w(i), ptq.f_w(i))
        assert np.array_equal(ada.shift(i), ptq.shift(i))
        ws = params[i][0].transpose(0, 2, 3, 1) * np.exp2(ptq.f_w(i))[:, None, None, None]
        w = ada.weight(i).astype(np.int64)
        # floor or floor + 1 of the float weight: at most 1 LSB from nearest rounding
        assert np.all((w == np.clip(np.floor(ws), -w_max, w_max))
                      | (w == np.clip(np.floor(ws) + 1, -w_max, w_max))), i
        assert np.abs(w - ptq.weight(i)).max() <= 1, i
        assert np.abs(ada.bias(i)).max() <= ptq.numerics.bias_limit
    assert [r.layer for r in results] == small_net.conv_indices
    assert ada.manifest["quantization"]["adaround"]["iters"] == FAST.iters


def test_reconstruction_loss_does_not_increase(small_model, rounded):
    ptq, ada, results, imgs = rounded
    for r in results:
        assert r.loss_ada < r.loss_ptq if r.kept else r.changed == 0
    assert any(r.kept and r.changed for r in results)
    # independently, on every output position of a layer whose input (the quantized image)
    # does not depend on other layers: the exported bundle's loss is not above the PTQ's
    i, layer = 0, ptq.layers[0]
    x = torch.from_numpy(np.concatenate([
        im2col(intmath.quantize_input(img).astype(np.float32), layer["size"],
               layer["stride"], layer["pad"]) for img in imgs]) * 2.0 ** -layer["f_in"])
    with torch.no_grad():
        y = torch.cat([small_model(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0,
                                   keep=True)[i][0].flatten(1).T for img in imgs])
    lo, hi = (v * 2.0 ** -layer["f_out"] for v in intmath.int_range(layer["out_bits"]))

    def loss(b) -> float:
        fw = b.f_w(i)
        w = torch.from_numpy(b.weight(i).reshape(len(fw), -1).astype(np.float32))
        bias = torch.from_numpy(b.bias(i) * np.exp2(-(layer["f_in"] + fw))).float()
        return float(layer_loss(x, w, torch.from_numpy(np.exp2(fw)).float(), bias,
                                layer["activation"] == "leaky", lo, hi, y))

    assert loss(ada) <= loss(ptq) * (1 + 1e-6)
    r = results[0]
    assert loss(ada) == pytest.approx(r.loss_ada if r.kept else r.loss_ptq, rel=1e-4)


def test_exported_bundle_is_bit_exact(rounded, small_net):
    _, ada, _, _ = rounded
    golden, fq = GoldenModel(ada), FakeQuantModel(ada)
    for img in random_images(2, small_net.width, seed=12):
        x = intmath.quantize_input(img)
        for i, (a, b) in enumerate(zip(golden.run(x), fq.ints(fq(x, keep=True)), strict=True)):
            assert np.array_equal(a, b), f"layer {i}"


def test_relaxation_and_regularizer():
    frac = np.array([0.0, 0.1, 0.5, 0.9, 0.999])
    h = rectified_sigmoid(torch.from_numpy(_inverse_h(frac)))
    assert np.allclose(h.numpy(), frac, atol=1e-9)
    assert float(rounding_regularizer(torch.tensor([0.0, 1.0, 1.0]), 2.0)) == 0.0
    assert float(rounding_regularizer(torch.tensor([0.5]), 20.0)) == 1.0
    with pytest.raises(ValueError):
        AdaRoundOptions(warmup=1.0)
    with pytest.raises(ValueError):
        AdaRoundOptions(beta_start=1.0, beta_end=2.0)


def test_bundle_must_match_the_network(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    check_match(small_net, small_model, ptq)
    other = FloatModel(small_net, random_params(small_net, seed=5)).eval()
    with pytest.raises(ValueError, match="rounded to nearest"):
        check_match(small_net, other, ptq)
    # an equalized + filled bundle rounds the transformed model: rebuilt from its
    # calibration images (small_bundle calibrates on random_images(4, width))
    tuned = small_bundle(small_net, small_model, QuantOptions.from_tag("channel-mse-bc-eq0.5-fill"))
    with pytest.raises(ValueError, match="calibration images"):
        reference_model(small_net, small_model, tuned, None)
    ref = reference_model(small_net, small_model, tuned, random_images(4, small_net.width))
    check_match(small_net, ref, tuned)
    with pytest.raises(ValueError):
        check_match(small_net, small_model, tuned)


def test_cli_rejects_missing_inputs(tmp_path: Path, capsys):
    rc = main(["--bundle", str(tmp_path / "none.npz"), "--images", str(tmp_path),
               "--out", str(tmp_path / "out.npz")])
    assert rc == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()


def test_flip_doubles_the_rows(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    imgs = random_images(2, small_net.width, seed=8)
    opts = AdaRoundOptions(iters=3, batch=16, positions=32, bias_iters=1)
    _, plain = adaround(ptq, small_model, imgs, opts)
    flipped, res = adaround(ptq, small_model, imgs, replace(opts, flip=True))
    assert [r.rows for r in res] == [2 * r.rows for r in plain]
    assert flipped.manifest["quantization"]["adaround"]["flip"] is True
