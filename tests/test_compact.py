"""Compact bundles (sw.quant.compact makes them, sw.runtime.compact unpacks them without
torch): one rounding bit per weight rebuilds the exact bundle, and every corrupt or
mismatched file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import HwConfig
from sw.quant import compact
from sw.quant.adaround import reference_transform
from sw.quant.model import FloatModel
from sw.quant.ptq import QuantOptions
from sw.runtime import compact as rcompact
from sw.runtime.bundle import Bundle
from tests.conftest import random_images, random_params, small_bundle

PROV = {"cfg": "small.cfg", "cfg_sha256": "c" * 64, "weights": "small.weights",
        "weights_sha256": "a" * 64}


def _rerounded(bundle: Bundle, ref: FloatModel, seed: int = 3) -> Bundle:
    """The bundle with every weight rounded down or up at random (what AdaRound may
    learn), one weight saturated out of floor/floor+1, and a provenance."""
    rng = np.random.default_rng(seed)
    params = ref.fused_params()
    arrays = dict(bundle.arrays)
    for i in ref.net.conv_indices:
        base = rcompact.floor_weights(params[i][0], bundle.f_w(i))
        q = np.clip(base + rng.integers(0, 2, base.shape), -127, 127)
        arrays[f"l{i}.weight"] = q.astype(np.int8)
    first = ref.net.conv_indices[-1]
    arrays[f"l{first}.weight"].flat[0] = 127 if arrays[f"l{first}.weight"].flat[0] < 100 else -127
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["provenance"] = PROV
    return Bundle(manifest, arrays).seal()


@pytest.fixture(scope="module")
def tuned(small_net, small_model):
    """An equalized + filled bundle of the small network, re-rounded, and its steps."""
    start = small_bundle(small_net, small_model, QuantOptions.from_tag("channel-mse-bc-eq0.5-fill"))
    ref, steps = reference_transform(small_net, small_model, start,
                                     random_images(4, small_net.width))
    assert len(steps) == 2
    return _rerounded(start, ref), steps


@pytest.fixture
def packed(tmp_path: Path, tuned, small_model) -> Path:
    bundle, steps = tuned
    return compact.save(tmp_path / "c.npz", *compact.pack(bundle, small_model, steps))


def test_round_trip_is_exact(packed, tuned, small_net, small_params):
    bundle, _ = tuned
    m = rcompact.read_manifest(packed)
    assert m["exceptions"] == 1 and m["steps"] == 2
    assert m["weights"] == sum(bundle.weight(i).size for i in small_net.conv_indices)
    back = rcompact.unpack(packed, small_net, small_params, PROV)
    assert back.content_hash == bundle.content_hash
    for name, a in bundle.arrays.items():
        assert np.array_equal(back.arrays[name], a), name
    assert back.manifest == bundle.manifest


def test_plain_bundle_needs_no_steps(tmp_path, small_net, small_model, small_params):
    ptq = small_bundle(small_net, small_model)
    path = compact.save(tmp_path / "p.npz", *compact.pack(ptq, small_model))
    assert rcompact.read_manifest(path)["steps"] == 0
    assert rcompact.unpack(path, small_net, small_params, {}).content_hash == ptq.content_hash


def test_refuses_a_bundle_of_other_weights(tuned, small_net, small_model):
    bundle, steps = tuned
    with pytest.raises(rcompact.CompactError, match="does not round this float model"):
        compact.pack(bundle, small_model)                    # steps left out
    other = FloatModel(small_net, random_params(small_net, seed=9)).eval()
    with pytest.raises(rcompact.CompactError, match="does not round"):
        compact.pack(bundle, other, steps)


def test_unpack_checks_the_float_weights(packed, small_net, small_params):
    with pytest.raises(rcompact.CompactError, match="made from weights aaaaaaaa"):
        rcompact.unpack(packed, small_net, small_params, {**PROV, "weights_sha256": "b" * 64})
    other = random_params(small_net, seed=9)
    with pytest.raises(rcompact.CompactError, match=r"not the recorded|beyond \+-127"):
        rcompact.unpack(packed, small_net, other, PROV)


def test_unpack_refuses_corrupt_files(tmp_path, packed, tuned, small_net, small_model,
                                     small_params):
    bundle, steps = tuned
    manifest, arrays = compact.pack(bundle, small_model, steps)
    i = small_net.conv_indices[1]
    flipped = dict(arrays)
    flipped[f"l{i}.up"] = arrays[f"l{i}.up"] ^ np.uint8(1)
    bad = compact.save(tmp_path / "flip.npz", manifest, flipped)
    with pytest.raises(rcompact.CompactError, match="not the recorded"):
        rcompact.unpack(bad, small_net, small_params, PROV)
    missing = {k: v for k, v in arrays.items() if k != f"l{i}.bias"}
    bad = compact.save(tmp_path / "miss.npz", manifest, missing)
    with pytest.raises(rcompact.CompactError, match="corrupt compact bundle.*KeyError"):
        rcompact.unpack(bad, small_net, small_params, PROV)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(packed.read_bytes()[:2000])
    with pytest.raises(rcompact.CompactError, match="corrupt or truncated"):
        rcompact.unpack(cut, small_net, small_params, PROV)
    plain = bundle.save(tmp_path / "bundle.npz")
    with pytest.raises(rcompact.CompactError, match="not a tinyyolo-fpga-compact file"):
        rcompact.read_manifest(plain)
    with pytest.raises(rcompact.CompactError, match="cannot read"):
        rcompact.read_manifest(tmp_path / "none.npz")


def test_cli_reports_errors(tmp_path, capsys):
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"not a zip")
    assert compact.main(["unpack", "--compact", str(garbage), "--out",
                         str(tmp_path / "b.npz")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not (tmp_path / "b.npz").exists()


def test_shipped_default_bundle(pretrained, pretrained_bundle):
    """The committed compact file is made for these number formats and the fetched weights,
    and rebuilds (in `default_bundle`) to the bundle it records: tuned, equalized, AdaRound."""
    from sw.runtime.weights import WEIGHTS_SHA256

    m = rcompact.read_manifest(rcompact.DEFAULT)
    made = m["bundle"]
    assert made["numerics_id"] == HwConfig().numerics_id_hex
    assert made["provenance"]["weights_sha256"] == WEIGHTS_SHA256
    assert pretrained_bundle.content_hash == made["content_hash"]
    q = pretrained_bundle.manifest["quantization"]
    assert q["equalize"] == 0.5 and q["fill"] and "adaround" in q
    assert q["calibration_images"] == compact.DEFAULT_RECIPE["first"]
    net, _ = pretrained
    assert m["weights"] == sum(pretrained_bundle.weight(i).size for i in net.conv_indices)


def test_every_config_of_the_shipped_numerics_gets_the_shipped_bundle(pretrained_bundle):
    """The ULX3S build (45 MHz, 3 Mbaud) and the A7-100T build (50x8 array) compute the same
    integers as the default: they run the shipped, COCO-tuned bundle, rebuilt without torch."""
    from sw.runtime.detect import shipped_bundle

    boards = Path(__file__).resolve().parent.parent / "boards"
    for name in ("ulx3s_85f.json", "arty_a7_100.json"):
        hw = HwConfig.load(boards / name)
        assert hw.config_id != HwConfig().config_id
        path = shipped_bundle(hw)
        assert path is not None
        assert Bundle.load(path, expect=hw).content_hash == pretrained_bundle.content_hash


def test_default_bundle_for_other_numerics_is_calibrated(tmp_path, monkeypatch):
    """Number formats the shipped file was not made for get a bundle calibrated on assets/."""
    from sw.quant import pipeline

    monkeypatch.setenv("TINYYOLO_CACHE", str(tmp_path))
    built = []
    monkeypatch.setattr(pipeline, "build_bundle",
                        lambda path, hw: built.append((path, hw)))
    other = HwConfig(head_bits=12)
    made = rcompact.read_manifest(rcompact.DEFAULT)["bundle"]
    assert other.numerics_id_hex != made["numerics_id"]
    path = pipeline.default_bundle(other)
    assert built == [(path, other)] and other.numerics_id_hex in path.name
    assert str(path).startswith(str(tmp_path))
