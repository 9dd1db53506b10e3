"""YOLO post-processing shared by every backend.

Image loading, Darknet-style letterboxing, decoding of YOLOv3 (``[yolo]``) and YOLOv2
(``[region]``) heads, greedy per-class NMS, COCO result helpers, drawing and atomic
image saving. Heads are real-valued HWC arrays (dequantized by the caller).
"""

from __future__ import annotations

import colorsys
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sw.runtime.util import atomic_file

__all__ = [
    "COCO80_TO_91",
    "Detection",
    "HeadSpec",
    "ImageError",
    "Letterbox",
    "box_iou",
    "class_names",
    "decode_head",
    "detect",
    "draw_detections",
    "letterbox",
    "letterboxed",
    "load_image",
    "nms",
    "save_image_atomic",
    "to_coco_results",
]

#: Gray value Darknet fills the letterbox padding with (0.5 in its float images).
PAD_VALUE = 128

#: tw/th are clipped to this magnitude before exp() so huge logits cannot overflow.
_EXP_CLIP = 30.0

_NAMES_PATH = Path(__file__).resolve().parent / "data" / "coco.names"


class ImageError(ValueError):
    """An image file that is missing, unreadable or not an image."""


# -- image I/O ---------------------------------------------------------------------------
def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High-bit-depth grayscale: PIL's convert() would clip, so rescale to 8 bit.
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(a.max(initial=0.0)), 1.0)
        g = np.clip(np.rint(a * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(g[:, :, None], 3, axis=2))
    if im.mode == "P" or im.mode == "PA" or "transparency" in im.info:
        im = im.convert("RGBA")  # resolves palette transparency without a warning
    return im.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array; raise `ImageError` on failure."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if not p.is_file():
        raise ImageError(f"{p}: not a regular file")
    try:
        with Image.open(p) as im:
            im.load()
            rgb = _to_rgb(im)
            arr = np.array(rgb, dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise ImageError(f"{p}: not a recognized image file") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"{p}: cannot read image ({e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{p}: unexpected image shape {arr.shape}")
    return arr


# -- letterbox ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """Geometry of a letterbox: input pixel = original pixel * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int
    orig_w: int
    orig_h: int
    size: int

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map xyxy boxes from letterboxed-input pixels to original pixels, clipped."""
        b = np.array(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        b[:, [0, 2]] = (b[:, [0, 2]] - self.pad_x) / self.scale
        b[:, [1, 3]] = (b[:, [1, 3]] - self.pad_y) / self.scale
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0.0, float(self.orig_w))
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0.0, float(self.orig_h))
        return b


def letterbox(img: np.ndarray, size: int = 416) -> tuple[np.ndarray, Letterbox]:
    """Resize `img` (HxWx3 uint8) to fit `size` x `size`, centered on gray 128 padding."""
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"letterbox expects an HxWx3 image, got shape {img.shape}")
    if size < 1:
        raise ValueError(f"letterbox size must be positive, got {size}")
    h, w = int(img.shape[0]), int(img.shape[1])
    scale = min(size / w, size / h)
    new_w = min(size, max(1, round(w * scale)))
    new_h = min(size, max(1, round(h * scale)))
    src = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    if (new_w, new_h) != (w, h):
        src = src.resize((new_w, new_h), Image.Resampling.BILINEAR)
    pad_x = (size - new_w) // 2
    pad_y = (size - new_h) // 2
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.asarray(src, dtype=np.uint8)
    return out, Letterbox(scale=scale, pad_x=pad_x, pad_y=pad_y, orig_w=w, orig_h=h,
                          size=size)


# -- head decoding -----------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSpec:
    """A detection head: "yolo" anchors in input pixels, "region" anchors in grid cells."""

    kind: str  # "yolo" or "region"
    anchors: tuple[tuple[float, float], ...]
    num_classes: int


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def objectness_floor(conf: float, frac_bits: int) -> int:
    """The largest head value (`frac_bits` fraction bits) of an objectness logit whose
    candidate cannot score above `conf`: one below the floor of logit(conf) in fixed point,
    so float rounding never drops a candidate `detect` would keep (a score is objectness
    times a class probability, never above the objectness)."""
    if not 0 < conf < 1:
        raise ValueError(f"a score threshold for a filter must lie in (0, 1), got {conf}")
    return math.floor(math.log(conf / (1 - conf)) * 2.0 ** frac_bits) - 1


def decode_head(head: np.ndarray, spec: HeadSpec,
                net_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode an (H, W, A*(5+C)) head into xyxy boxes (input pixels), objectness, probs.

    Candidates are ordered row-major over (row, col, anchor); N = H*W*A.
    """
    if spec.kind not in ("yolo", "region"):
        raise ValueError(f"unknown head kind {spec.kind!r}")
    a_n, c_n = len(spec.anchors), spec.num_classes
    per = 5 + c_n
    t = np.asarray(head, dtype=np.float64)
    if t.ndim != 3 or t.shape[2] != a_n * per:
        raise ValueError(f"head shape {t.shape} does not match {a_n} anchors x (5+{c_n})")
    h, w = t.shape[:2]
    t = t.reshape(h, w, a_n, per)
    anchors = np.asarray(spec.anchors, dtype=np.float64).reshape(a_n, 2)
    cols = np.arange(w, dtype=np.float64)[None, :, None]
    rows = np.arange(h, dtype=np.float64)[:, None, None]
    bx = (cols + _sigmoid(t[..., 0])) / w * net_size
    by = (rows + _sigmoid(t[..., 1])) / h * net_size
    ew = np.exp(np.clip(t[..., 2], -_EXP_CLIP, _EXP_CLIP))
    eh = np.exp(np.clip(t[..., 3], -_EXP_CLIP, _EXP_CLIP))
    if spec.kind == "yolo":
        bw = ew * anchors[:, 0]
        bh = eh * anchors[:, 1]
        probs = _sigmoid(t[..., 5:])
    else:
        bw = ew * anchors[:, 0] / w * net_size
        bh = eh * anchors[:, 1] / h * net_size
        probs = _softmax(t[..., 5:], axis=-1) if c_n else t[..., 5:]
    obj = _sigmoid(t[..., 4])
    boxes = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=-1)
    n = h * w * a_n
    return boxes.reshape(n, 4), obj.reshape(n), probs.reshape(n, c_n)


# -- NMS ---------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M); 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy NMS: indices kept, by descending score; drops boxes with IoU > iou_thresh."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(s):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou_thresh]
    return np.asarray(keep, dtype=np.int64)


# -- detection ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    """One detection in original-image pixels."""

    bbox: tuple[float, float, float, float]  # x, y, w, h in original-image pixels
    score: float
    class_id: int  # 0..79


def detect(heads: list[np.ndarray], specs: list[HeadSpec], box: Letterbox,
           conf_thresh: float = 0.25, nms_thresh: float = 0.45,
           max_dets: int = 300) -> list[Detection]:
    """Decode heads, threshold objectness*class_prob, per-class NMS, map to the image.

    Every (candidate, class) pair above `conf_thresh` is kept, so one box can appear under
    several classes. Boxes with no area left after clipping to the image are dropped.
    """
    if len(heads) != len(specs):
        raise ValueError(f"{len(heads)} heads but {len(specs)} head specs")
    if not heads:
        return []
    num_classes = {s.num_classes for s in specs}
    if len(num_classes) != 1:
        raise ValueError(f"heads disagree on the number of classes: {sorted(num_classes)}")
    parts = [decode_head(h, s, box.size) for h, s in zip(heads, specs, strict=True)]
    boxes = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])[:, None] * np.concatenate(
        [p[2] for p in parts])
    cand, cls = np.nonzero(scores > conf_thresh)
    if cand.size == 0:
        return []
    sc = scores[cand, cls]
    kept: list[np.ndarray] = []
    for c in np.unique(cls):
        sel = np.flatnonzero(cls == c)
        kept.append(sel[nms(boxes[cand[sel]], sc[sel], nms_thresh)])
    k = np.concatenate(kept)
    k = k[np.argsort(-sc[k], kind="stable")]
    xyxy = box.to_original(boxes[cand[k]])
    dets: list[Detection] = []
    for (x0, y0, x1, y1), s, c in zip(xyxy, sc[k], cls[k], strict=True):
        if x1 <= x0 or y1 <= y0:
            continue
        dets.append(Detection(bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                              score=float(s), class_id=int(c)))
        if len(dets) >= max_dets:
            break
    return dets


# -- COCO helpers ------------------------------------------------------------------------
#: COCO category_id (91-id scheme) of each of the 80 contiguous class indices.
COCO80_TO_91: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
    *range(72, 83), *range(84, 91),
)


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    try:
        text = _NAMES_PATH.read_text(encoding="utf-8")
    except OSError as e:
        raise OSError(f"{_NAMES_PATH}: cannot read class names ({e})") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != len(COCO80_TO_91):
        raise ValueError(f"{_NAMES_PATH}: expected {len(COCO80_TO_91)} names, "
                         f"found {len(names)}")
    return names


def class_names() -> list[str]:
    """The 80 COCO class names, in Darknet's order (from sw/runtime/data/coco.names)."""
    return list(_class_names())


def to_coco_results(dets: list[Detection], file_name: str, image_id: int | None = None,
                    names: Sequence[str] | None = None) -> list[dict]:
    """COCO-style result dicts (bbox x,y,w,h) for one image. With the COCO names (`names`
    None) `category_id` is COCO's 91-id; with other `names` it is class_id + 1."""
    coco = names is None
    names = _class_names() if names is None else names
    out: list[dict] = []
    for d in dets:
        r: dict = {
            "file_name": file_name,
            "bbox": [round(float(v), 2) for v in d.bbox],
            "score": round(float(d.score), 5),
            "class_id": int(d.class_id),
            "class_name": names[d.class_id],
            "category_id": COCO80_TO_91[d.class_id] if coco else int(d.class_id) + 1,
        }
        if image_id is not None:
            r["image_id"] = int(image_id)
        out.append(r)
    return out


# -- drawing and saving ------------------------------------------------------------------
def _class_color(class_id: int) -> tuple[int, int, int]:
    hue = (class_id * 0.618033988749895) % 1.0  # golden-ratio hues stay well apart
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_detections(img: np.ndarray, dets: list[Detection], names: list[str]) -> Image.Image:
    """Draw boxes labelled "name score" on a copy of `img` (HxWx3 uint8)."""
    arr = np.array(img, dtype=np.uint8, copy=True)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"draw_detections expects an HxWx3 image, got shape {arr.shape}")
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    h, w = arr.shape[:2]
    width = max(1, round(min(w, h) / 200))
    for d in dets:
        x, y, bw, bh = d.bbox
        color = _class_color(d.class_id)
        draw.rectangle([x, y, x + bw, y + bh], outline=color, width=width)
        name = names[d.class_id] if 0 <= d.class_id < len(names) else str(d.class_id)
        label = f"{name} {d.score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 4, bottom - top + 2
        ty = y - th if y - th >= 0 else y
        draw.rectangle([x, ty, x + tw, ty + th], fill=color)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if luma > 140 else (255, 255, 255)
        draw.text((x + 2 - left, ty + 1 - top), label, fill=text_color, font=font)
    return im


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def save_image_atomic(image: Image.Image, path: str | os.PathLike[str]) -> None:
    """Save as PNG or JPEG (by suffix), atomically (`util.atomic_file`)."""
    p = Path(path)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{p}: unsupported image suffix (use .png, .jpg or .jpeg)")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    with atomic_file(p) as f:
        image.save(f, format=fmt)


def letterboxed(paths: Sequence[str | os.PathLike[str]], size: int) -> list[np.ndarray]:
    """The images at `paths`, each letterboxed to `size` (uint8 HWC)."""
    return [letterbox(load_image(p), size)[0] for p in paths]
