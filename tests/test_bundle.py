"""The quantized bundle: round trip, integrity checks, config match."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from hw.spec.config import HwConfig
from sw.runtime.bundle import Bundle, BundleError
from tests.conftest import small_bundle


@pytest.fixture(scope="module")
def bundle(small_net, small_model) -> Bundle:
    return small_bundle(small_net, small_model)


def test_round_trip(tmp_path, bundle):
    path = bundle.save(tmp_path / "b.npz")
    back = Bundle.load(path, expect=HwConfig())
    assert back.manifest == bundle.manifest
    assert set(back.arrays) == set(bundle.arrays)
    for k, v in bundle.arrays.items():
        assert back.arrays[k].dtype == v.dtype and np.array_equal(back.arrays[k], v)
    assert back.content_hash == bundle.content_hash
    assert not list(tmp_path.glob("*.part"))


def test_contents(bundle):
    assert bundle.input_frac_bits == 7 and bundle.input_shape == (32, 32, 3)
    assert bundle.head_indices == [8, 15]
    w = bundle.weight(0)
    assert w.dtype == np.int8 and w.shape == (8, 3, 3, 3) and w.min() >= -127
    assert bundle.bias(0).dtype == np.int32
    layers = bundle.layers
    assert layers[8]["head"] and layers[8]["out_bits"] == HwConfig().head_bits
    assert layers[0]["out_bits"] == 8
    # the concatenated tensors (route 13 = upsample(11) + layer 2) share one scale
    assert layers[11]["f_out"] == layers[2]["f_out"] == layers[13]["f_out"]
    for i, layer in enumerate(layers):
        if layer["kind"] == "conv":
            s = bundle.shift(i)
            assert 0 <= s.min() and s.max() <= HwConfig().max_shift


def test_bundle_serves_every_config_of_its_numerics(tmp_path, bundle):
    """A bundle records the number formats, not the build: another array size, clock or
    baud rate (the ULX3S config) computes the same integers and takes the same bundle."""
    path = bundle.save(tmp_path / "b.npz")
    assert bundle.manifest["numerics_id"] == HwConfig().numerics_id_hex
    for other in (HwConfig(array_rows=4), HwConfig(clock_hz=45_000_000, uart_baud=3_000_000)):
        assert other.config_id != HwConfig().config_id
        assert Bundle.load(path, expect=other).content_hash == bundle.content_hash


def test_numerics_mismatch(tmp_path, bundle):
    path = bundle.save(tmp_path / "b.npz")
    other = HwConfig(head_bits=12)
    with pytest.raises(BundleError, match=f"made for numerics {HwConfig().numerics_id_hex} .*"
                                          f"computes with {other.numerics_id_hex}"):
        Bundle.load(path, expect=other)


def test_corrupt_byte_detected(tmp_path, bundle):
    data = bytearray(bundle.save(tmp_path / "b.npz").read_bytes())
    for offset in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        bad = bytearray(data)
        bad[offset] ^= 0x55
        (tmp_path / "bad.npz").write_bytes(bytes(bad))
        with pytest.raises(BundleError, match="bad.npz: (corrupt|content hash|not a)"):
            Bundle.load(tmp_path / "bad.npz")


def test_truncated_and_garbage(tmp_path, bundle):
    data = bundle.save(tmp_path / "b.npz").read_bytes()
    for n in (0, 10, len(data) // 2, len(data) - 1):
        (tmp_path / "t.npz").write_bytes(data[:n])
        with pytest.raises(BundleError, match="t.npz"):
            Bundle.load(tmp_path / "t.npz")
    (tmp_path / "g.npz").write_text("hello")
    with pytest.raises(BundleError, match="corrupt or truncated"):
        Bundle.load(tmp_path / "g.npz")
    with pytest.raises(BundleError, match="cannot read"):
        Bundle.load(tmp_path / "missing.npz")


def _rewrite(tmp_path, bundle, edit_manifest=None, edit_arrays=None, rehash=True):
    """A bundle file with an edited manifest/arrays, optionally with a valid hash."""
    manifest = json.loads(json.dumps(bundle.manifest))
    arrays = {k: v.copy() for k, v in bundle.arrays.items()}
    if edit_manifest:
        edit_manifest(manifest)
    if edit_arrays:
        edit_arrays(arrays)
    if rehash:
        from sw.runtime.bundle import _content_hash
        manifest["content_hash"] = _content_hash(manifest, arrays)
    path = tmp_path / "edited.npz"
    blob = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(path, __manifest__=blob, **arrays)
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(version=99), "format version 99"),
    (lambda m: m.update(format="other"), "not a tinyyolo-fpga-bundle"),
    (lambda m: m["layers"][2].update(f_in=m["layers"][2]["f_in"] + 1), "layer 2: f_in"),
    (lambda m: m["layers"][13].update(layers=[12, 9]), "layer 13"),
    (lambda m: m["layers"][0].update(kind="shortcut"), "unknown kind"),
    (lambda m: m["layers"][8].update(out_bits=8), "layer 8: out_bits 8"),
    (lambda m: m["numerics"].update(head_bits=12), "numerics do not match"),
])
def test_inconsistent_manifest(tmp_path, bundle, edit, needle):
    path = _rewrite(tmp_path, bundle, edit_manifest=edit)
    with pytest.raises(BundleError, match=needle):
        Bundle.load(path)


def test_edited_array_without_rehash_is_caught(tmp_path, bundle):
    def bump(arrays):
        arrays["l0.weight"][0, 0, 0, 0] ^= 1
    with pytest.raises(BundleError, match="content hash mismatch"):
        Bundle.load(_rewrite(tmp_path, bundle, edit_arrays=bump, rehash=False))


@pytest.mark.parametrize("edit, needle", [
    (lambda a: a["l0.weight"].__setitem__((0, 0, 0, 0), -128), "symmetric"),
    (lambda a: a.update({"l0.weight": a["l0.weight"][:4]}), "weight must be int8"),
    (lambda a: a.update({"l0.bias": a["l0.bias"].astype(np.int64)}), "bias must be int32"),
    (lambda a: a["l0.bias"].__setitem__(0, 2 ** 31 - 1), "accumulator bound"),
    (lambda a: a["l0.f_w"].__setitem__(0, 60), "shifts"),
    (lambda a: a.update(extra=np.zeros(1)), "unexpected arrays"),
    (lambda a: a.pop("l2.f_w"), "missing array"),
])
def test_bad_arrays(tmp_path, bundle, edit, needle):
    with pytest.raises(BundleError, match=needle):
        Bundle.load(_rewrite(tmp_path, bundle, edit_arrays=edit))


def test_save_is_atomic(tmp_path, bundle, monkeypatch):
    path = bundle.save(tmp_path / "b.npz")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        bundle.save(path)
    assert path.read_bytes() == before and not list(tmp_path.glob("*.part"))
    assert zipfile.is_zipfile(path)
