"""Helpers every layer of the host software shares, each defined once: progress logging,
atomic file writes, file hashing and image listing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["IMAGE_SUFFIXES", "atomic_file", "image_files", "log", "sha256_file",
           "write_json_atomic"]

#: Image files a folder argument picks up.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def log(msg: str) -> None:
    """A progress or status line on stderr (stdout carries results)."""
    print(msg, file=sys.stderr, flush=True)


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
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
        return files
    return [p]
