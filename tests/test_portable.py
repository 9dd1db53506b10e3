"""Detection with the golden model and the bundle tools run on a non-POSIX host: none of
our modules on those paths imports a POSIX-only module (fcntl, termios, select, ...).

A sitecustomize wraps `__import__` and refuses those modules to any importer in hw/, sw/
or boards/ (the standard library and third-party packages keep their own platform
branches: subprocess imports select on POSIX, _winapi on Windows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = '''
import builtins

POSIX_ONLY = {"fcntl", "termios", "tty", "pty", "select", "resource", "grp", "pwd", "posix",
              "syslog", "curses", "readline", "_posixsubprocess"}
_import = builtins.__import__


def _guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__", "")
    ours = importer.split(".")[0] in ("sw", "hw", "boards") or (
        importer == "__main__" and "/sw/" in (globals or {}).get("__file__", ""))
    if ours and level == 0 and name.split(".")[0] in POSIX_ONLY:
        raise ImportError(f"{importer} imports the POSIX-only module {name!r} "
                          "(blocked by the test)")
    return _import(name, globals, locals, fromlist, level)


builtins.__import__ = _guarded
'''


@pytest.fixture(scope="module")
def blocked(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("posix-blocked")
    (d / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(d)}
    probe = subprocess.run([sys.executable, "-c", "__import__('fcntl', {'__name__': 'sw.x'})"],
                           capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


def test_golden_detection_without_posix_modules(tmp_path, blocked, pretrained_bundle):
    out = tmp_path / "out"
    r = _run(blocked, "sw/host.py", "--image", "dog.jpg", "--backend", "golden",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert {d["class_name"] for d in json.loads((out / "detections.json").read_text())} \
        >= {"dog", "bicycle"}


def test_bundle_tools_without_posix_modules(tmp_path, blocked, pretrained_bundle):
    r = _run(blocked, "-m", "sw.quant.compact", "unpack", "--out", str(tmp_path / "d.npz"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d.npz").stat().st_size > 1_000_000
    for tool in ("sw.quant.quantize", "sw.quant.adaround", "sw.quant.qat", "sw.eval"):
        r = _run(blocked, "-m", tool, "--help")
        assert r.returncode == 0, (tool, r.stderr)
        assert "usage:" in r.stdout, tool
