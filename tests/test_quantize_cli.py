"""`python -m sw.quant.quantize`: a variant tag selects every option, tuning steps included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sw.quant.quantize import main
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import write_weights
from tests.conftest import SMALL_CFG, random_images, random_params


def _files(tmp_path: Path, small_net) -> list[str]:
    cfg, weights, imgs = tmp_path / "small.cfg", tmp_path / "small.weights", tmp_path / "imgs"
    cfg.write_text(SMALL_CFG)
    write_weights(weights, small_net, random_params(small_net))
    imgs.mkdir()
    for k, img in enumerate(random_images(3, small_net.width)):
        Image.fromarray(img).save(imgs / f"{k}.png")
    return ["--cfg", str(cfg), "--weights", str(weights), "--calib", str(imgs)]


def test_variant_tag_selects_tuning(tmp_path, small_net, capsys):
    args = _files(tmp_path, small_net)
    assert main([*args, "--out", str(tmp_path / "plain.npz")]) == 0
    assert main([*args, "--variant", "channel-mse-bc-eq0.5-fill",
                 "--out", str(tmp_path / "eq.npz")]) == 0
    plain, eq = Bundle.load(tmp_path / "plain.npz"), Bundle.load(tmp_path / "eq.npz")
    q = eq.manifest["quantization"]
    assert q["equalize"] == 0.5 and q["fill"] and q["activations"] == "mse"
    assert "fill" not in plain.manifest["quantization"]
    assert any(not np.array_equal(plain.weight(i), eq.weight(i)) for i in small_net.conv_indices)


def test_bad_variant_is_an_error(tmp_path, small_net, capsys):
    args = _files(tmp_path, small_net)
    assert main([*args, "--variant", "channel-bogus", "--out", str(tmp_path / "x.npz")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
