"""Video files and cameras through OpenCV (`opencv-python-headless`, imported on first
use): frames in as RGB arrays, annotated frames out as an MP4, and a live window."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["Mp4Writer", "Source", "VideoError", "Window", "open_camera", "open_video"]


class VideoError(ValueError):
    """A video or camera that cannot be opened, read or written, or a window that
    cannot be shown."""


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as e:
        raise VideoError(f"video and camera input need OpenCV ({e}): pip install "
                         "opencv-python-headless") from e
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # errors are ours
    return cv2


@dataclass
class Source:
    """Frames of a video file or a camera. `name`: the file's stem or cameraN (output
    names); `label`: the file's name or cameraN (the detections' file_name); `frames`: the
    count a file reports (None for a camera); `fps`: the file's rate, or the camera's (30
    when it reports none)."""

    name: str
    label: str
    cap: Any
    fps: float
    frames: int | None
    live: bool
    _first: Any = None      # a frame read to check the source, returned first
    _index: int = 0
    _t0: float = field(default_factory=time.monotonic)

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next frame (HxWx3 uint8 RGB) and its time in seconds (a file: index / fps;
        a camera: since opening), or None at the end."""
        if self._first is not None:
            ok, bgr, self._first = True, self._first, None
        else:
            ok, bgr = self.cap.read()
        if not ok or bgr is None:
            return None
        t = time.monotonic() - self._t0 if self.live else self._index / self.fps
        self._index += 1
        return np.ascontiguousarray(bgr[:, :, ::-1]), t

    def close(self) -> None:
        self.cap.release()


def open_video(path: str | os.PathLike[str]) -> Source:
    """A video file; VideoError when it is missing or OpenCV cannot decode a frame of it."""
    cv2 = _cv2()
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such video file")
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise VideoError(f"{p}: OpenCV cannot open this video (not a video, or a codec "
                         "it lacks)")
    ok, first = cap.read()
    if not ok:
        cap.release()
        raise VideoError(f"{p}: no frame could be decoded")
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    return Source(p.stem, p.name, cap, fps if fps > 0 else 30.0, count if count > 0 else None,
                  False, first)


def open_camera(index: int) -> Source:
    """Camera `index` (0: the first); VideoError when it cannot be opened or gives no frame."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(index)
    if not cap.isOpened() or not cap.grab():
        cap.release()
        raise VideoError(f"camera {index}: cannot open it (no such camera, in use by another "
                         "program, or no permission: on Linux check /dev/video* and the "
                         "'video' group)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    name = f"camera{index}"
    return Source(name, name, cap, fps if 0 < fps <= 240 else 30.0, None, True)


class Mp4Writer:
    """Frames (HxWx3 uint8 RGB, all one size) into an MP4 (MPEG-4 part 2, `mp4v`), opened
    at the first frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._out: Any = None

    def write(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        if self._out is None:
            h, w = frame.shape[:2]
            self._out = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"),
                                        self.fps, (w, h))
            if not self._out.isOpened():
                raise VideoError(f"{self.path}: OpenCV cannot write an MP4 here")
        self._out.write(np.ascontiguousarray(frame[:, :, ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.release()
            self._out = None


class Window:
    """A live window (OpenCV's HighGUI). Opening it fails with VideoError where there is
    no display or the installed OpenCV has no GUI (the headless wheel)."""

    def __init__(self, title: str) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                     or os.environ.get("WAYLAND_DISPLAY")):
            raise VideoError("--show needs a display: DISPLAY and WAYLAND_DISPLAY are unset "
                             "(leave --show out and use --out)")
        cv2 = _cv2()
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise VideoError("--show needs OpenCV with a GUI: the installed one has none "
                             "(pip install opencv-python in place of opencv-python-headless)"
                             ) from e

    def show(self, frame: np.ndarray) -> bool:
        """Show a frame (RGB); False once the user pressed q or Esc or closed the window."""
        cv2 = _cv2()
        cv2.imshow(self.title, np.ascontiguousarray(frame[:, :, ::-1]))
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and \
            cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        _cv2().destroyWindow(self.title)
