"""hw.gencore: the generated-core cache keeps one directory per config and variant."""

from __future__ import annotations

from pathlib import Path

from hw.gencore import prune_stale, run_generator


def _core(root: Path, name: str, key: str | None = None) -> Path:
    d = root / name
    d.mkdir()
    (d / "core.json").write_text("{}")
    if key is not None:
        (d / "stamp.sha256").write_text(key)
    return d


def test_prune_stale_removes_only_other_keys_of_the_same_name(tmp_path):
    current = _core(tmp_path, "arty_a7-128-0123456789abcdef")
    stale = _core(tmp_path, "arty_a7-128-fedcba9876543210")
    (tmp_path / f".{stale.name}.lock").write_text("")
    keep = [_core(tmp_path, "arty_a7-sim-128-fedcba9876543210"),   # another variant
            _core(tmp_path, "arty_a7-64-fedcba9876543210"),        # another data width
            _core(tmp_path, "arty_a7-128-notahexkey123456"),       # not a key suffix
            _core(tmp_path, "ulx3s_85f-128-fedcba9876543210")]     # another config
    assert prune_stale(current) == [stale]
    assert not stale.exists() and not (tmp_path / f".{stale.name}.lock").exists()
    assert current.exists() and all(k.exists() for k in keep)
    assert prune_stale(tmp_path / "no_key_suffix") == []


def test_a_cached_generation_prunes_its_stale_siblings(tmp_path):
    key = "0123456789abcdef" + "0" * 48
    out = _core(tmp_path, f"cfg-{key[:16]}", key)
    stale = _core(tmp_path, "cfg-1111111111111111", "1" * 64)
    # the stamp matches: no generator runs (the module does not exist), the stale one goes
    run_generator(out, key, "no.such.module", [], what="test", error=RuntimeError)
    assert (out / "core.json").exists() and not stale.exists()
