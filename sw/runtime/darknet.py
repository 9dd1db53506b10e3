"""Darknet import: `.cfg` parser, `.weights` reader/writer, BN fusing.

Supports the layer types Tiny-YOLOv3 and Tiny-YOLOv2 use: [net], [convolutional],
[maxpool], [upsample], [route], [yolo] and [region]. Malformed input raises
`DarknetError` naming the file and the line (cfg) or byte offset (weights).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Conv",
    "ConvWeights",
    "DarknetError",
    "MaxPool",
    "Network",
    "Route",
    "Upsample",
    "YoloHead",
    "fuse_bn",
    "load_cfg",
    "parse_cfg",
    "read_weights",
    "write_weights",
]

#: Darknet's batch-norm epsilon: x_hat = (x - mean) / (sqrt(var) + 1e-6)
#: (normalize_cpu in Darknet's blas.c adds it after the square root).
BN_EPS = 1e-6


class DarknetError(ValueError):
    """A malformed or inconsistent Darknet cfg or weights file."""


# -- layer specs ----------------------------------------------------------------------
@dataclass(frozen=True)
class Conv:
    filters: int
    size: int
    stride: int
    pad: int
    batch_normalize: bool
    activation: str  # "leaky" or "linear"
    kind: str = field(default="conv", init=False)


@dataclass(frozen=True)
class MaxPool:
    size: int
    stride: int
    padding: int  # Darknet's total padding (default size - 1), split pad//2 before
    kind: str = field(default="maxpool", init=False)


@dataclass(frozen=True)
class Upsample:
    stride: int
    kind: str = field(default="upsample", init=False)


@dataclass(frozen=True)
class Route:
    layers: tuple[int, ...]  # absolute layer indices
    kind: str = field(default="route", init=False)


@dataclass(frozen=True)
class YoloHead:
    """[yolo] (v3: anchors in input pixels) or [region] (v2: anchors in grid cells)."""

    anchors: tuple[tuple[float, float], ...]  # already masked for [yolo]
    classes: int
    region: bool = False
    kind: str = field(default="yolo", init=False)


Layer = Conv | MaxPool | Upsample | Route | YoloHead


@dataclass(frozen=True)
class Network:
    """A parsed cfg: input size, layers, and every layer's output shape (H, W, C)."""

    width: int
    height: int
    channels: int
    layers: tuple[Layer, ...]
    shapes: tuple[tuple[int, int, int], ...]
    lines: tuple[int, ...]  # cfg line of each layer's section header
    source: str = "<cfg>"

    def input_of(self, i: int) -> tuple[int, ...]:
        """Indices of the layers feeding layer i (-1 is the network input)."""
        layer = self.layers[i]
        return layer.layers if isinstance(layer, Route) else (i - 1,)

    def in_shape(self, i: int) -> tuple[int, int, int]:
        src = self.input_of(i)
        if src == (-1,):
            return (self.height, self.width, self.channels)
        h, w, _ = self.shapes[src[0]]
        return (h, w, sum(self.shapes[j][2] for j in src))

    @property
    def conv_indices(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, Conv)]

    @property
    def head_indices(self) -> list[int]:
        """The layers feeding the [yolo]/[region] layers (the detection convs)."""
        return [i - 1 for i, layer in enumerate(self.layers) if isinstance(layer, YoloHead)]

    @property
    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.layers)):
            for j in self.input_of(i):
                out.setdefault(j, []).append(i)
        return out

    def macs(self) -> int:
        total = 0
        for i in self.conv_indices:
            conv = self.layers[i]
            h, w, c = self.shapes[i]
            total += h * w * c * conv.size * conv.size * self.in_shape(i)[2]
        return total

    def param_count(self) -> int:
        return sum(self.layers[i].filters * (self.layers[i].size ** 2 * self.in_shape(i)[2] + 1)
                   for i in self.conv_indices)


# -- cfg parsing ----------------------------------------------------------------------
@dataclass
class _Section:
    name: str
    line: int
    options: dict[str, tuple[str, int]]


class _Reader:
    """Typed access to one section's options with file:line errors."""

    def __init__(self, path: str, sec: _Section):
        self.path, self.sec, self.used = path, sec, set()

    def _err(self, msg: str, line: int | None = None) -> DarknetError:
        return DarknetError(f"{self.path}:{line or self.sec.line}: [{self.sec.name}] {msg}")

    def raw(self, key: str, default: str | None = None) -> tuple[str, int]:
        self.used.add(key)
        if key in self.sec.options:
            return self.sec.options[key]
        if default is None:
            raise self._err(f"missing required option '{key}'")
        return default, self.sec.line

    def int(self, key: str, default: int | None = None, lo: int = 0) -> int:
        text, line = self.raw(key, None if default is None else str(default))
        try:
            v = int(text)
        except ValueError:
            raise self._err(f"option '{key}' must be an integer, got '{text}'", line) from None
        if v < lo:
            raise self._err(f"option '{key}' must be >= {lo}, got {v}", line)
        return v

    def ints(self, key: str) -> list[int]:
        text, line = self.raw(key)
        try:
            return [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise self._err(f"option '{key}' must be a list of integers, got '{text}'",
                            line) from None

    def floats(self, key: str) -> list[float]:
        text, line = self.raw(key)
        try:
            vals = [float(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise self._err(f"option '{key}' must be a list of numbers, got '{text}'",
                            line) from None
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise self._err(f"option '{key}' must hold positive numbers, got '{text}'", line)
        return vals


_SECTION_ALIASES = {"conv": "convolutional", "max": "maxpool", "net": "net",
                    "network": "net"}
_SUPPORTED = ("net", "convolutional", "maxpool", "upsample", "route", "yolo", "region")


def _split_sections(text: str, path: str) -> list[_Section]:
    sections: list[_Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise DarknetError(f"{path}:{lineno}: malformed section header '{raw.strip()}'")
            name = line[1:-1].strip().lower()
            name = _SECTION_ALIASES.get(name, name)
            if name not in _SUPPORTED:
                raise DarknetError(f"{path}:{lineno}: unsupported layer type [{name}] "
                                   f"(supported: {', '.join(_SUPPORTED)})")
            sections.append(_Section(name, lineno, {}))
            continue
        if "=" not in line:
            raise DarknetError(f"{path}:{lineno}: expected 'key=value', got '{raw.strip()}'")
        if not sections:
            raise DarknetError(f"{path}:{lineno}: option before the first [section]")
        key, value = (s.strip() for s in line.split("=", 1))
        if not key or not value:
            raise DarknetError(f"{path}:{lineno}: empty key or value in '{raw.strip()}'")
        sections[-1].options[key.lower()] = (value, lineno)
    if not sections or sections[0].name != "net":
        raise DarknetError(f"{path}:1: the cfg must start with a [net] section")
    if len(sections) < 2:
        raise DarknetError(f"{path}: the cfg has no layers after [net]")
    return sections


def _parse_layer(r: _Reader, index: int, prev_count: int) -> Layer:
    name = r.sec.name
    if name == "convolutional":
        size = r.int("size", 1, lo=1)
        padding = r.int("padding", 0)
        if r.int("pad", 0):
            padding = size // 2
        act, line = r.raw("activation", "logistic")
        if act not in ("leaky", "linear"):
            raise r._err(f"activation '{act}' is not supported (leaky, linear)", line)
        if r.int("groups", 1, lo=1) != 1:
            raise r._err("grouped convolution is not supported")
        return Conv(filters=r.int("filters", 1, lo=1), size=size, stride=r.int("stride", 1, lo=1),
                    pad=padding, batch_normalize=bool(r.int("batch_normalize", 0)),
                    activation=act)
    if name == "maxpool":
        size = r.int("size", 2, lo=1)
        stride = r.int("stride", size, lo=1)
        return MaxPool(size=size, stride=stride, padding=r.int("padding", size - 1))
    if name == "upsample":
        return Upsample(stride=r.int("stride", 2, lo=1))
    if name == "route":
        rel = r.ints("layers")
        line = r.raw("layers")[1]
        if not rel:
            raise r._err("route needs at least one layer", line)
        absolute = []
        for v in rel:
            j = index + v if v < 0 else v
            if not 0 <= j < index:
                raise r._err(f"route layer {v} points outside layers 0..{index - 1}", line)
            absolute.append(j)
        if r.int("groups", 1) != 1:
            raise r._err("route groups are not supported")
        return Route(layers=tuple(absolute))
    if name in ("yolo", "region"):
        classes = r.int("classes", 20, lo=1)
        anchors = r.floats("anchors")
        if len(anchors) % 2:
            raise r._err("anchors must come in (w, h) pairs", r.raw("anchors")[1])
        pairs = [(anchors[k], anchors[k + 1]) for k in range(0, len(anchors), 2)]
        num = r.int("num", len(pairs), lo=1)
        if num != len(pairs):
            raise r._err(f"num={num} but {len(pairs)} anchor pairs are given")
        if name == "region":
            if r.int("coords", 4) != 4:
                raise r._err("only coords=4 is supported")
            for key in ("tree", "map"):
                if key in r.sec.options:
                    raise r._err(f"'{key}' (YOLO9000's class hierarchy) is not supported",
                                 r.raw(key)[1])
            if r.int("background", 0):
                raise r._err("background=1 is not supported", r.raw("background")[1])
            if r.int("softmax", 0) != 1:
                raise r._err("softmax=1 is required (the decoder takes a softmax over the "
                             "classes; Darknet's default softmax=0 leaves them raw)",
                             r.raw("softmax", "0")[1])
            return YoloHead(anchors=tuple(pairs), classes=classes, region=True)
        if "scale_x_y" in r.sec.options and r.floats("scale_x_y") != [1.0]:
            raise r._err("scale_x_y other than 1 is not supported", r.raw("scale_x_y")[1])
        if r.int("new_coords", 0):
            raise r._err("new_coords=1 is not supported", r.raw("new_coords")[1])
        mask = r.ints("mask") if "mask" in r.sec.options else list(range(num))
        bad = [m for m in mask if not 0 <= m < num]
        if bad:
            raise r._err(f"mask entries {bad} are outside 0..{num - 1}", r.raw("mask")[1])
        return YoloHead(anchors=tuple(pairs[m] for m in mask), classes=classes)
    raise AssertionError(name)


def _out_shape(layer: Layer, ins: list[tuple[int, int, int]], r: _Reader) -> tuple[int, int, int]:
    h, w, c = ins[0]
    if isinstance(layer, Conv):
        oh = (h + 2 * layer.pad - layer.size) // layer.stride + 1
        ow = (w + 2 * layer.pad - layer.size) // layer.stride + 1
        if oh < 1 or ow < 1:
            raise r._err(f"a {layer.size}x{layer.size} convolution does not fit a {h}x{w} input")
        return (oh, ow, layer.filters)
    if isinstance(layer, MaxPool):
        oh = (h + layer.padding - layer.size) // layer.stride + 1
        ow = (w + layer.padding - layer.size) // layer.stride + 1
        if oh < 1 or ow < 1:
            raise r._err(f"a {layer.size}x{layer.size} maxpool does not fit a {h}x{w} input")
        return (oh, ow, c)
    if isinstance(layer, Upsample):
        return (h * layer.stride, w * layer.stride, c)
    if isinstance(layer, Route):
        if any(s[:2] != (h, w) for s in ins):
            raise r._err(f"route concatenates maps of different sizes {[s[:2] for s in ins]}")
        return (h, w, sum(s[2] for s in ins))
    # yolo / region: passes its input through; check the channel count
    per = 5 + layer.classes
    if c != len(layer.anchors) * per:
        raise r._err(f"expects {len(layer.anchors)} x (5 + {layer.classes}) = "
                     f"{len(layer.anchors) * per} input channels, the layer before gives {c}")
    return (h, w, c)


def parse_cfg(text: str, path: str = "<cfg>") -> Network:
    """Parse Darknet cfg text into a `Network` with every layer's output shape."""
    sections = _split_sections(text, path)
    net = _Reader(path, sections[0])
    width, height = net.int("width", lo=1), net.int("height", lo=1)
    channels = net.int("channels", 3, lo=1)
    layers: list[Layer] = []
    shapes: list[tuple[int, int, int]] = []
    for i, sec in enumerate(sections[1:]):
        r = _Reader(path, sec)
        layer = _parse_layer(r, i, len(layers))
        src = layer.layers if isinstance(layer, Route) else (i - 1,)
        ins = [(height, width, channels) if j < 0 else shapes[j] for j in src]
        if isinstance(layer, YoloHead) and (i == 0 or not isinstance(layers[-1], Conv)):
            raise r._err("a detection layer must follow a convolutional layer")
        shapes.append(_out_shape(layer, ins, r))
        layers.append(layer)
    return Network(width, height, channels, tuple(layers), tuple(shapes),
                   tuple(s.line for s in sections[1:]), path)


def load_cfg(path: str | Path) -> Network:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DarknetError(f"{path}: cannot read cfg: {e.strerror}") from e
    except UnicodeDecodeError:
        raise DarknetError(f"{path}: not a text cfg file") from None
    return parse_cfg(text, str(path))


# -- weights --------------------------------------------------------------------------
@dataclass
class ConvWeights:
    """One convolution's parameters as stored by Darknet (weights in OIHW)."""

    weights: np.ndarray
    biases: np.ndarray
    scales: np.ndarray | None = None  # batch norm gamma
    mean: np.ndarray | None = None
    var: np.ndarray | None = None


def _header_size(major: int, minor: int) -> int:
    """Darknet stores `seen` as uint64 from version 0.2 on, as int32 before."""
    return 20 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 16


def read_weights(path: str | Path, network: Network) -> list[ConvWeights]:
    """Read a `.weights` file for `network`; the float count must match the cfg exactly."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DarknetError(f"{path}: cannot read weights: {e.strerror}") from e
    if len(data) < 12:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a weights header")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    offset = _header_size(major, minor)
    if len(data) < offset:
        raise DarknetError(f"{path}: header of version {major}.{minor}.{revision} is "
                           f"{offset} bytes, the file has {len(data)}")

    def take(n: int, what: str, i: int) -> np.ndarray:
        nonlocal offset
        end = offset + 4 * n
        if end > len(data):
            raise DarknetError(
                f"{path}: truncated at byte {len(data)}: layer {i} ({what}) needs {n} floats "
                f"from byte offset {offset}; the weights do not match {network.source}")
        arr = np.frombuffer(data, "<f4", n, offset).astype(np.float32)
        offset = end
        return arr

    out = []
    for i in network.conv_indices:
        conv = network.layers[i]
        cin = network.in_shape(i)[2]
        n = conv.filters
        cw = ConvWeights(weights=np.empty(0), biases=take(n, "biases", i))
        if conv.batch_normalize:
            cw.scales, cw.mean, cw.var = (take(n, k, i) for k in ("scales", "mean", "variance"))
        cw.weights = take(n * cin * conv.size ** 2, "weights", i).reshape(
            n, cin, conv.size, conv.size)
        for name in ("weights", "biases", "scales", "mean", "var"):
            arr = getattr(cw, name)
            if arr is not None and not np.isfinite(arr).all():
                raise DarknetError(f"{path}: layer {i} {name} contain NaN or infinity")
        if cw.var is not None and (cw.var < 0).any():
            raise DarknetError(f"{path}: layer {i} has negative batch-norm variance")
        out.append(cw)
    if offset != len(data):
        raise DarknetError(
            f"{path}: {len(data) - offset} bytes left after the last layer (byte offset "
            f"{offset} of {len(data)}): the weights do not match {network.source}")
    return out


def write_weights(path: str | Path, network: Network, params: list[ConvWeights],
                  version: tuple[int, int, int] = (0, 2, 0), seen: int = 0) -> None:
    """Write a Darknet `.weights` file (the inverse of `read_weights`)."""
    major, minor, rev = version
    chunks = [struct.pack("<3i", major, minor, rev)]
    chunks.append(struct.pack("<Q" if _header_size(major, minor) == 20 else "<i", seen))
    for i, cw in zip(network.conv_indices, params, strict=True):
        parts = [cw.biases]
        if network.layers[i].batch_normalize:
            parts += [cw.scales, cw.mean, cw.var]
        parts.append(cw.weights)
        chunks += [np.asarray(p, "<f4").tobytes() for p in parts]
    Path(path).write_bytes(b"".join(chunks))


def fuse_bn(cw: ConvWeights) -> tuple[np.ndarray, np.ndarray]:
    """Fold batch norm into the convolution: (weights OIHW, bias), float64.

    y = gamma * (conv(x) - mean) / (sqrt(var) + eps) + beta
      = conv_{w * k}(x) + (beta - mean * k),  k = gamma / (sqrt(var) + eps)
    (Darknet stores beta in `biases` when batch_normalize=1.)
    """
    w = cw.weights.astype(np.float64)
    b = cw.biases.astype(np.float64)
    if cw.scales is None:
        return w, b
    k = cw.scales.astype(np.float64) / (np.sqrt(cw.var.astype(np.float64)) + BN_EPS)
    return w * k[:, None, None, None], b - cw.mean.astype(np.float64) * k
