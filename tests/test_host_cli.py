"""`python sw/host.py`: detections, outputs, and clear errors with non-zero exits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.spec.config import HwConfig
from sw.runtime.postprocess import COCO80_TO_91, class_names

ROOT = Path(__file__).resolve().parent.parent


def host(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess:
    """Run the CLI; the golden backend unless the call names one (the default, the
    simulated RTL, takes minutes per frame: tests/test_driver.py and sim/ cover it)."""
    if "--backend" not in args:
        args = ("--backend", "golden", *args)
    return subprocess.run([sys.executable, str(ROOT / "sw" / "host.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": "", **(env or {})})


@pytest.fixture(scope="module", autouse=True)
def _bundle_ready(pretrained_bundle):
    """Build the default bundle once, so the CLI runs below do not race to build it."""


def test_dog_golden_writes_outputs(tmp_path):
    r = host("--image", "dog.jpg", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "bicycle" in r.stdout
    dets = json.loads((tmp_path / "detections.json").read_text())
    assert (tmp_path / "dog.png").stat().st_size > 10_000
    names = class_names()
    assert {d["class_name"] for d in dets} >= {"dog", "bicycle"}
    for d in dets:
        assert set(d) == {"file_name", "bbox", "score", "class_id", "class_name", "category_id"}
        assert d["file_name"] == "dog.jpg" and len(d["bbox"]) == 4 and 0 < d["score"] <= 1
        assert d["category_id"] == COCO80_TO_91[d["class_id"]]
        assert d["class_name"] == names[d["class_id"]]
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 768.01 and y + h <= 576.01  # dog.jpg is 768x576
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_folder_gives_one_json(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("dog.jpg", "person.jpg"):
        shutil.copy(ROOT / "assets" / name, imgs / name)
    out = tmp_path / "out"
    r = host("--image", str(imgs), "--out", str(out), "--backend", "fakequant")
    assert r.returncode == 0, r.stderr
    dets = json.loads((out / "detections.json").read_text())
    assert {d["file_name"] for d in dets} == {"dog.jpg", "person.jpg"}
    assert (out / "dog.png").exists() and (out / "person.png").exists()
    assert "[2/2] person.jpg" in r.stdout


def test_float_backend():
    r = host("--image", str(ROOT / "assets" / "dog.jpg"), "--backend", "float")
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "(float," in r.stdout


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: _write(d / "t.jpg", "not an image"), "t.jpg"),
    (lambda d: d, "no images"),
])
def test_bad_images_exit_2_and_write_nothing(tmp_path, make, needle):
    src = make(tmp_path)
    out = tmp_path / "out"
    r = host("--image", str(src), "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and needle in r.stderr and "Traceback" not in r.stderr
    assert not (out / "detections.json").exists()


def test_bad_image_in_folder_writes_nothing(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(ROOT / "assets" / "dog.jpg", imgs / "a.jpg")
    (imgs / "b.jpg").write_bytes((ROOT / "assets" / "dog.jpg").read_bytes()[:300])
    out = tmp_path / "out"
    r = host("--image", str(imgs), "--out", str(out))
    assert r.returncode == 2 and "b.jpg" in r.stderr
    assert list(out.iterdir()) == []


def test_bad_bundle_and_config(tmp_path, pretrained_bundle):
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04garbage")
    r = host("--image", "dog.jpg", "--bundle", str(tmp_path / "b.npz"))
    assert r.returncode == 2 and "corrupt" in r.stderr
    other = tmp_path / "head12.json"
    HwConfig(head_bits=12).save(other)
    good = tmp_path / "good.npz"
    pretrained_bundle.save(good)
    r = host("--image", "dog.jpg", "--bundle", str(good), "--hw-config", str(other))
    assert r.returncode == 2 and "quantize the network again" in r.stderr
    (tmp_path / "bad.json").write_text("{")
    r = host("--image", "dog.jpg", "--hw-config", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "invalid JSON" in r.stderr


def test_bad_cfg_and_weights(tmp_path):
    r = host("--image", "dog.jpg", "--weights", str(tmp_path / "missing.weights"))
    assert r.returncode == 2 and "missing.weights: cannot read" in r.stderr
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=416\nheight=416\n[convolutional]\nactivation=leaky\nfilters=x\n")
    (tmp_path / "w.weights").write_bytes(b"\0" * 64)
    r = host("--image", "dog.jpg", "--cfg", str(cfg), "--weights", str(tmp_path / "w.weights"))
    assert r.returncode == 2 and "bad.cfg:6:" in r.stderr
    good_cfg = ROOT / "sw" / "runtime" / "data" / "yolov3-tiny.cfg"
    r = host("--image", "dog.jpg", "--cfg", str(good_cfg), "--weights",
             str(tmp_path / "w.weights"))
    assert r.returncode == 2 and "truncated" in r.stderr


def test_argument_errors():
    r = host("--image", "dog.jpg", "--conf", "2")
    assert r.returncode == 2 and "--conf" in r.stderr
    r = host("--image", "dog.jpg", "--backend", "fpga")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_own_calibration_folder_builds_its_own_bundle(tmp_path):
    """--calib builds a bundle cached under a key of the images' contents (a fresh cache
    here; the weights are the fetched ones, named explicitly)."""
    from sw.runtime.bundle import Bundle
    from sw.runtime.weights import fetch_weights
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("eagle.jpg", "horses.jpg"):
        shutil.copy(ROOT / "assets" / name, calib / f"mine-{name}")
    cache = tmp_path / "cache"
    args = ("--image", "dog.jpg", "--calib", str(calib), "--weights", str(fetch_weights()))
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "calibrating on 2 images" in r.stderr
    (path,) = (cache / "bundles").glob("custom-*.npz")
    calibration = Bundle.load(path).manifest["provenance"]["calibration"]
    assert calibration == ["mine-eagle.jpg", "mine-horses.jpg"]
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})        # cached: no calibration
    assert r.returncode == 0 and "calibrating" not in r.stderr, r.stderr
    # the key is the images' contents: another image under the same name is a new bundle
    shutil.copy(ROOT / "assets" / "kite.jpg", calib / "mine-horses.jpg")
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})
    assert r.returncode == 0 and "calibrating on 2 images" in r.stderr, r.stderr
    assert len(list((cache / "bundles").glob("custom-*.npz"))) == 2
