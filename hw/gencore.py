"""Generated third-party cores (LiteDRAM's, LiteEth's) cached under build/: the cache key of
a generation and the locked, stamped run of its generator in a child process.

Plain Python: the generators themselves (`hw.dram.litedram_gen`, `hw.eth.liteeth_gen`) are
the only modules that import Migen and LiteX, and they run as child processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Generated", "config_file", "dist_version", "generation_key", "prune_stale",
           "run_generator"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Generated:
    """A generated core: its Verilog (module ``meta["module"]``) and what core.json says."""

    directory: Path
    meta: dict[str, Any]

    @property
    def verilog(self) -> Path:
        return self.directory / f"{self.meta['module']}.v"


def config_file(config_dir: Path, config: str, *, what: str,
                error: type[Exception]) -> Path:
    """``config_dir/config.yml``; `error` naming the configs there when it does not exist."""
    path = config_dir / f"{config}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in config_dir.glob("*.yml")))
        raise error(f"no {what} config {config!r} in {config_dir} (known: {known})")
    return path


def dist_version(dist: str) -> str:
    """The installed version of Python distribution `dist`, or ``"none"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def generation_key(files: Iterable[Path], variant: str, dists: Iterable[str]) -> str:
    """SHA-256 over the files (names and bytes: the config, the generator script), the
    variant's string and the versions of the distributions the generator uses."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(f"{variant}\0".encode())
    for dist in dists:
        h.update(f"{dist} {dist_version(dist)}\0".encode())
    return h.hexdigest()


def run_generator(out: Path, key: str, module: str, args: list[str], *, what: str,
                  error: type[Exception]) -> None:
    """Make `out` hold the output of ``python -m module args --out out`` for `key`, unless
    it already does (its ``stamp.sha256`` equals `key`). A lock file beside `out`
    serialises concurrent generations; a failed run leaves no stamp and raises `error`
    naming `what` and the log (``generate.log`` in `out`). `out`'s name ends in ``-`` and
    16 hex digits of the key; a successful run removes the other keys' directories of the
    same name (`prune_stale`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = out / "stamp.sha256"
        if stamp.exists() and stamp.read_text() == key:
            prune_stale(out)
            return
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        r = subprocess.run([sys.executable, "-m", module, *args, "--out", str(out)], cwd=ROOT,
                           capture_output=True, text=True)
        (out / "generate.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0 or not (out / "core.json").exists():
            raise error(f"{what} core generation failed (exit {r.returncode}; is it installed? "
                        f"`make setup`); see {out / 'generate.log'}:\n{r.stderr[-2000:]}")
        stamp.write_text(key)
        prune_stale(out)


def prune_stale(out: Path) -> list[Path]:
    """Remove the siblings of `out` that differ from it only in their 16-hex-digit key
    suffix (generations for a config, generator or LiteX version no longer current);
    returns what was removed."""
    stem, sep, suffix = out.name.rpartition("-")
    if not sep or len(suffix) != 16:
        return []
    gone = []
    for other in out.parent.glob(f"{stem}-" + "?" * 16):
        tail = other.name[len(stem) + 1:]
        if other != out and other.is_dir() and all(c in "0123456789abcdef" for c in tail):
            shutil.rmtree(other, ignore_errors=True)
            (other.parent / f".{other.name}.lock").unlink(missing_ok=True)
            gone.append(other)
    return gone
