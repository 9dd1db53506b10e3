"""The runtime needs neither torch nor Amaranth: `sw/host.py` detects with the golden
model (the shipped bundle rebuilt from its compact file) and on the simulated RTL (a
harness built before) with both made unimportable by a sitecustomize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hw.spec.config import DEFAULT

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "sw" / "host.py"

BLOCKER = '''
import sys


class _Blocked:
    """Refuses torch and Amaranth, as on a machine without them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "amaranth", "amaranth_boards"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, _Blocked())
'''


def host(*args: str, blocked: Path | None, cache: Path | None = None,
         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(blocked) if blocked else ""}
    if cache:
        env["TINYYOLO_CACHE"] = str(cache)
    return subprocess.run([sys.executable, str(HOST), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def blocked(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("blocked")
    (d / "sitecustomize.py").write_text(BLOCKER)
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(d)})
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr
    return d


def test_golden_detections_without_torch(tmp_path, blocked, pretrained_bundle):
    """Same detections.json as with torch installed; the default bundle is rebuilt from
    the compact file in a fresh cache (the weights come from the shared cache)."""
    from sw.runtime.weights import cache_dir, fetch_weights

    fetch_weights()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "yolov3-tiny.weights").symlink_to(cache_dir() / "yolov3-tiny.weights")
    r = host("--image", "dog.jpg", "--backend", "golden", "--out", str(tmp_path / "blocked"),
             blocked=blocked, cache=cache)
    assert r.returncode == 0, r.stderr
    assert "rebuilding the default bundle" in r.stderr
    r2 = host("--image", "dog.jpg", "--backend", "golden", "--out", str(tmp_path / "full"),
              blocked=None)
    assert r2.returncode == 0, r2.stderr
    got = json.loads((tmp_path / "blocked" / "detections.json").read_text())
    want = json.loads((tmp_path / "full" / "detections.json").read_text())
    assert got == want and {d["class_name"] for d in got} >= {"dog", "bicycle", "car"}


def test_torch_backends_say_what_they_need(blocked):
    for args in (("--backend", "float"), ("--backend", "fakequant"),
                 ("--backend", "golden", "--calib", str(ROOT / "assets"))):
        r = host("--image", "dog.jpg", *args, blocked=blocked)
        assert r.returncode == 2, (args, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "needs PyTorch" in last, r.stderr


def test_sim_backend_with_a_built_harness(tmp_path, blocked, small_net, small_model):
    """The simulated RTL runs with the harness built before (here, in this process);
    the host process itself imports no Amaranth."""
    from sw.runtime.link import SimLink
    from sw.runtime.resident import memory_training

    from .conftest import small_bundle

    # builds the harness (the profile-guided one the sim backend runs) if this checkout has
    # none yet
    with SimLink(DEFAULT, top="memory", train=memory_training):
        pass
    bundle = tmp_path / "small.npz"
    small_bundle(small_net, small_model).save(bundle)
    r = host("--image", "dog.jpg", "--bundle", str(bundle), "--conf", "0.5", blocked=blocked)
    assert r.returncode == 0, r.stderr
    assert "(sim," in r.stdout and "building the simulator" not in r.stderr
