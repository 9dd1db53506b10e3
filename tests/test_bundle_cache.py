"""Built bundles are cached under a key of everything that decides them
(`sw.quant.pipeline.bundle_cache_path`): quantizer and bundle versions, every quantizer
option, the number formats, and the cfg's, weights' and calibration images' names and
contents. The CLI's custom bundles (tests/test_host_cli.py), the calibrated default for
other number formats and the evaluation's variants all use it."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from hw.spec.config import DEFAULT, HwConfig
from sw.quant import pipeline
from sw.quant.ptq import QuantOptions

ROOT = Path(__file__).resolve().parent.parent

#: A value other than the default for every QuantOptions field.
OTHER = {"weights": "tensor", "activations": "max", "percentile": 99.9,
         "head_activations": "mse", "bias_correction": False, "std_m": 2.5, "equalize": 0.5,
         "fill": True, "fsearch": True, "search_images": 8}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    cfg, weights = tmp_path / "net.cfg", tmp_path / "net.weights"
    cfg.write_text("[net]\n")
    weights.write_bytes(b"\0" * 64)
    imgs = []
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(ROOT / "assets" / "dog.jpg", tmp_path / name)
        imgs.append(tmp_path / name)
    return cfg, weights, imgs


def test_every_option_changes_the_key(files):
    assert set(OTHER) == {f.name for f in dataclasses.fields(QuantOptions)}
    base = pipeline.bundle_cache_path("t", DEFAULT, *files)
    assert base == pipeline.bundle_cache_path("t", DEFAULT, *files)   # deterministic
    assert base == pipeline.bundle_cache_path("t", DEFAULT, *files, QuantOptions())
    keys = {base}
    for name, value in OTHER.items():
        opts = dataclasses.replace(QuantOptions(), **{name: value})
        keys.add(pipeline.bundle_cache_path("t", DEFAULT, *files, opts))
    assert len(keys) == len(OTHER) + 1


def test_numerics_versions_and_contents_change_the_key(files, monkeypatch):
    cfg, weights, imgs = files
    base = pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs)
    # the number formats count; the build's sizes, clock and baud do not
    assert pipeline.bundle_cache_path("t", HwConfig(head_bits=12), cfg, weights, imgs) != base
    assert pipeline.bundle_cache_path("t", HwConfig(clock_hz=50_000_000, uart_baud=3_000_000),
                                      cfg, weights, imgs) == base
    assert pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs[::-1]) != base
    assert pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs[:1]) != base
    assert pipeline.bundle_cache_path("t", DEFAULT, cfg, pipeline.PRETRAINED, imgs) != base
    imgs[1].write_bytes((ROOT / "assets" / "kite.jpg").read_bytes())      # same name
    changed = pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs)
    assert changed != base
    weights.write_bytes(b"\1" * 64)
    assert pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs) != changed
    monkeypatch.setattr(pipeline, "QUANTIZER_VERSION", pipeline.QUANTIZER_VERSION + 1)
    bumped = pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs)
    monkeypatch.setattr(pipeline, "BUNDLE_VERSION", pipeline.BUNDLE_VERSION + 1)
    assert len({bumped, pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs),
                pipeline.bundle_cache_path("t", DEFAULT, cfg, weights, imgs[:1])}) == 3


def test_unreadable_file_names_itself(files, tmp_path):
    cfg, _, imgs = files
    with pytest.raises(OSError, match="cannot read") as e:
        pipeline.bundle_cache_path("t", DEFAULT, cfg, tmp_path / "gone.weights", imgs)
    assert e.value.filename.endswith("gone.weights")


def test_eval_variants_follow_their_calibration_images(tmp_path, monkeypatch,
                                                       pretrained_bundle):
    """sw.eval's PTQ variants are rebuilt when an image of the calibration folder changes
    (not keyed on the folder's name) or for other options; cached otherwise."""
    from sw.eval import evaluate

    monkeypatch.setenv("TINYYOLO_CACHE", str(tmp_path / "cache"))    # a fresh bundle cache
    built: list[tuple[Path, str]] = []

    def fake_build(path, calib, hw, opts, **_):
        built.append((Path(path), opts.tag))
        pretrained_bundle.save(path)
    monkeypatch.setattr(evaluate, "build_bundle", fake_build)
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(ROOT / "assets" / "dog.jpg", calib / name)
    evaluate.variant_bundle("channel-mse-bc", None, str(calib))
    evaluate.variant_bundle("channel-mse-bc", None, str(calib))            # cached
    assert len(built) == 1
    shutil.copy(ROOT / "assets" / "kite.jpg", calib / "b.jpg")
    evaluate.variant_bundle("channel-mse-bc", None, str(calib))
    evaluate.variant_bundle("channel-max", None, str(calib))
    assert [tag for _, tag in built] == ["channel-mse-bc", "channel-mse-bc", "channel-max"]
    assert len({p for p, _ in built}) == 3



def test_calibrated_default_for_other_numerics_is_keyed_too():
    """`default_bundle` for number formats the shipped bundle was not made for: the key
    holds the options, the number formats and the contents of assets/."""
    hw = HwConfig(head_bits=12)
    path = pipeline.calibrated_bundle_path(hw)
    assert path.name.startswith(f"yolov3-tiny-channel-mse-bc-{hw.numerics_id_hex}-")
    assert path == pipeline.calibrated_bundle_path(hw)
    assert path != pipeline.calibrated_bundle_path(hw, QuantOptions(percentile=99.9))
    assert path != pipeline.calibrated_bundle_path(HwConfig(head_bits=14))
