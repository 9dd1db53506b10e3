"""Label-free fidelity on views of images (sw.eval.fidelity)."""

from __future__ import annotations

import numpy as np
import pytest

from sw.eval.fidelity import evaluate, main, markdown
from sw.quant.pipeline import make_backend
from sw.quant.views import views
from sw.runtime.detect import CALIB_DIR


def test_views_are_the_image_its_mirror_and_seeded_crops():
    img = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    v = views(img, 6, np.random.default_rng(1))
    assert len(v) == 6 and v[0] is img and np.array_equal(v[1], img[:, ::-1])
    for crop in v[2:]:
        h, w = crop.shape[:2]
        assert 8 <= h <= 60 and 8 <= w <= 80 and 0.2 * 60 * 80 <= h * w <= 60 * 80
        assert crop.flags.c_contiguous
    again = views(img, 6, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(v, again, strict=True))
    assert len(views(img, 1, np.random.default_rng(1))) == 1


def test_float_against_itself_is_perfect_and_the_bundle_is_close(pretrained,
                                                                pretrained_bundle):
    net, model = pretrained
    fl = make_backend("float", net=net, model=model)
    files = [CALIB_DIR / "dog.jpg", CALIB_DIR / "person.jpg"]
    bundles = {"self": fl, "int8": make_backend("golden", pretrained_bundle)}
    rep = evaluate(files, fl, bundles, net.width, n_views=3, seed=2, bootstrap=30)
    assert rep["views"] == 6 and rep["float_boxes"] > 6
    rows = {r["bundle"]: r for r in rep["rows"]}
    assert rows["self"]["fidelity50_95"] == pytest.approx(1.0)
    assert rows["self"]["head_sqnr_db"] == float("inf")
    assert 0.8 < rows["int8"]["fidelity50"] <= 1.0
    assert rows["int8"]["fidelity50_95"] < 1.0 and 20 < rows["int8"]["head_sqnr_db"] < 60
    lo, hi = rows["int8"]["ci"]["diff50_95"]         # int8 - self, paired
    assert lo <= hi <= 0 and lo < 0
    assert "diff50_95" not in rows["self"]["ci"]
    assert "| int8 |" in markdown(rep)


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--images", str(tmp_path)])                 # no bundle named
    assert main(["--images", str(tmp_path), "--bundle", "default"]) == 2
    assert "no images" in capsys.readouterr().err
