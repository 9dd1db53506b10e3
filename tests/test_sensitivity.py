"""Per-layer sensitivity (sw.eval.sensitivity) and the mixed float / fake-quant model under it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hw.spec import intmath
from sw.eval import sensitivity
from sw.quant.compact import rounded_model
from sw.quant.model import FakeQuantModel, FloatModel, MixedModel, image_tensor
from sw.runtime.compact import CompactError
from tests.conftest import random_images, random_params, small_bundle


@pytest.fixture(scope="module")
def small(small_net, small_model):
    """(network, float model, bundle, fake-quant model) of the small test network."""
    bundle = small_bundle(small_net, small_model)
    return small_net, small_model, bundle, FakeQuantModel(bundle)


def _images(net) -> np.ndarray:
    return np.stack(random_images(2, net.width, seed=9))


def test_everything_quantized_is_the_fakequant_model(small) -> None:
    net, model, _, fq = small
    imgs = _images(net)
    got = MixedModel(fq, model, net.conv_indices, True)(imgs, keep=True)
    want = fq(intmath.quantize_input(imgs).transpose(0, 3, 1, 2), keep=True)
    assert len(got) == len(want) == len(net.layers)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype == torch.float64 and torch.equal(a, b), f"layer {i}"


def test_nothing_quantized_is_the_float_model(small) -> None:
    net, model, _, fq = small
    imgs = _images(net)
    got = MixedModel(fq, model, [], False)(imgs, keep=True)
    with torch.no_grad():
        want = model(image_tensor(imgs), keep=True)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b.double()), f"layer {i}"


def test_one_layer_quantized(small) -> None:
    """Only layer 2: the layers before it are float, its output lies on its int8 grid (its
    own requantization), and it changes the heads."""
    net, model, bundle, fq = small
    imgs = _images(net)
    got = MixedModel(fq, model, [2], False)(imgs, keep=True)
    with torch.no_grad():
        want = model(image_tensor(imgs), keep=True)
    assert all(torch.equal(got[i], want[i].double()) for i in range(2))
    q = got[2] * 2.0 ** bundle.layers[2]["f_out"]
    assert torch.equal(q, q.round()) and q.abs().max() <= 128
    assert not torch.equal(q, want[2].double() * 2.0 ** bundle.layers[2]["f_out"])
    for i in bundle.head_indices:
        assert not torch.equal(got[i], want[i].double())


def test_mixed_model_refuses_what_does_not_fit(small) -> None:
    net, model, _, fq = small
    with pytest.raises(ValueError, match=r"not conv layers of the bundle: \[1\]"):
        MixedModel(fq, model, [1], True)
    other = FloatModel(net, random_params(net, seed=4))
    other.convs["0"] = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="layer 0: float weights"):
        MixedModel(fq, other, [], True)


def test_rounded_model(small, pretrained, pretrained_bundle) -> None:
    """The float weights a bundle rounds: the float model itself for a plain PTQ bundle,
    the equalized one (from the shipped compact file) for the default bundle; a float
    model the bundle does not round is refused."""
    net, model, bundle, _ = small
    assert rounded_model(bundle, model) is model
    with pytest.raises(CompactError, match="not floor or floor"):
        rounded_model(bundle, FloatModel(net, random_params(net, seed=4)).eval())
    _, tiny_model = pretrained
    ref = rounded_model(pretrained_bundle, tiny_model)
    assert ref is not tiny_model
    w0, w1 = tiny_model.convs["0"].weight, ref.convs["0"].weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)       # equalized


def test_report_table_and_plot(small, tmp_path) -> None:
    """Every unit has its two rows; "all" is the bundle; the writer makes the three files."""
    net, model, bundle, _ = small
    files = []
    for k, img in enumerate(random_images(2, 48, seed=13)):
        files.append(tmp_path / f"img{k}.png")
        Image.fromarray(img).save(files[-1])
    rep = sensitivity.evaluate(files, bundle, model, n_views=1, seed=1, bootstrap=5,
                               command="python -m sw.eval.sensitivity --test")
    assert rep["views"] == 2
    assert [u["unit"] for u in rep["units"]] == [sensitivity.INPUT, *net.conv_indices]
    for u in rep["units"]:
        for key in ("only", "all_but"):
            row = u[key]
            assert 0 <= row["fidelity50_95"] <= 1 and np.isfinite(row["head_sqnr_db"])
            lo, hi = row["ci"]["fidelity50_95"]
            assert lo <= hi
        assert u["only"]["head_sqnr_db"] > rep["all"]["head_sqnr_db"]
    md = sensitivity.write(rep, tmp_path / "out" / "sens")
    text = (tmp_path / "out" / "sens.md").read_text()
    assert text == md and "python -m sw.eval.sensitivity --test" in text.splitlines()[3]
    assert rep["machine"]["node"] in text and rep["started"][:10] in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| input") or
            ln.startswith("| layer ")]
    assert len(rows) == 1 + len(net.conv_indices)
    assert (tmp_path / "out" / "sens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "out" / "sens.json").read_text())["units"][1]["unit"] == 0


def test_cli_errors(tmp_path, capsys) -> None:
    assert sensitivity.main(["--images", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sensitivity.main(["--images", str(tmp_path), "--views", "0"])
