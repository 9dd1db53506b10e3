"""Helpers every layer of the host software shares, each defined once: progress logging
and progress bars, atomic file writes, file hashing and image listing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = ["IMAGE_SUFFIXES", "Progress", "atomic_file", "echo", "image_files", "log", "progress",
           "set_quiet", "sha256_file", "ticking", "write_json_atomic"]

T = TypeVar("T")

#: Image files a folder argument picks up.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


_quiet = False
_open_bars = 0


def set_quiet(quiet: bool) -> None:
    """`quiet`: no progress bars and no `log(..., progress=True)` lines (the CLIs' --quiet)."""
    global _quiet
    _quiet = quiet


def log(msg: str, progress: bool = False) -> None:
    """A status line on stderr (stdout carries results); `progress` lines are left out
    under `set_quiet(True)`. Printed above an open progress bar, not through it."""
    if progress and _quiet:
        return
    if _open_bars:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def echo(msg: str) -> None:
    """A result line on stdout, printed above an open progress bar, not through it."""
    if _open_bars:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stdout)
    else:
        print(msg, flush=True)


def _bars_wanted() -> bool:
    if _quiet or not sys.stderr.isatty():
        return False      # CI logs and redirected output stay free of bar redraws
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """A progress bar on stderr (tqdm) where stderr is a terminal and not `set_quiet`;
    otherwise nothing. `total` None: a counter with the rate, no bar."""

    def __init__(self, total: int | None, desc: str, unit: str = "it") -> None:
        self._bar: Any = None
        if _bars_wanted():
            global _open_bars
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True, leave=False)
            _open_bars += 1

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            global _open_bars
            self._bar.close()
            self._bar = None
            _open_bars -= 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[T], desc: str, total: int | None = None,
             unit: str = "it") -> Iterator[T]:
    """`items`, with a `Progress` bar over them (`total` default: len(items) if it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)   # type: ignore[arg-type]
    with Progress(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update()


@contextlib.contextmanager
def ticking(desc: str) -> Iterator[None]:
    """An elapsed-seconds counter on stderr while the block runs (a wait of unknown
    length: a build), under the same rules as `Progress`."""
    bar = Progress(None, desc, unit="s")
    if bar._bar is None:
        yield
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            bar.update()
    t = threading.Thread(target=tick, daemon=True)
    t0 = time.monotonic()
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        bar.close()
        log(f"{desc}: {time.monotonic() - t0:.0f} s")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """A file to write `path` through: a temporary file in the same folder, renamed onto
    `path` only when the block ends without an exception (else removed), so `path` is
    never half-written. Creates the folder; the file gets the usual umask permissions."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp's 0600 is not meant for results
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(obj: object, path: str | os.PathLike[str]) -> None:
    """`obj` as indented JSON at `path`, atomically (`atomic_file`)."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=1)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_files(path: str | os.PathLike[str]) -> list[Path]:
    """An image file, or the images (`IMAGE_SUFFIXES`) in a folder, sorted by name."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir())
        if not files:
            raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
        return files
    return [p]
