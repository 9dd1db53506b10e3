"""Progress bars (sw/runtime/util.py): on a terminal's stderr only, none with --quiet,
none in logs and pipes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sw.runtime import util

ROOT = Path(__file__).resolve().parent.parent


def test_no_bar_without_a_terminal(capsys):
    seen = list(util.progress(range(3), "items"))
    with util.Progress(5, "x") as bar:
        assert bar._bar is None
        bar.update()
    with util.ticking("waiting"):
        pass
    assert seen == [0, 1, 2] and capsys.readouterr().err == ""


def _folder(tmp_path: Path) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("dog.jpg", "person.jpg"):
        shutil.copy(ROOT / "assets" / name, imgs / name)
    return imgs


def _stderr_on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; its exit status and what it showed."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    proc = subprocess.Popen([sys.executable, str(ROOT / "sw" / "host.py"), *args],
                            stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ""})
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:           # the far end closed: the process has exited
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=300), shown.decode(errors="replace")


def test_folder_shows_a_bar_on_a_terminal_and_not_with_quiet(tmp_path, pretrained_bundle):
    imgs = _folder(tmp_path)
    rc, shown = _stderr_on_a_terminal("--image", str(imgs), "--backend", "golden")
    assert rc == 0, shown
    assert "images:" in shown and "1/2" in shown and ("image/s" in shown or "s/image" in shown)
    rc, shown = _stderr_on_a_terminal("--image", str(imgs), "--backend", "golden", "--quiet")
    assert rc == 0 and "images:" not in shown and "2/2" not in shown, shown


def test_folder_in_a_pipe_has_no_bar(tmp_path, pretrained_bundle):
    r = subprocess.run([sys.executable, str(ROOT / "sw" / "host.py"), "--image",
                        str(_folder(tmp_path)), "--backend", "golden"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "images:" not in r.stderr
    assert "[2/2] person.jpg" in r.stdout
