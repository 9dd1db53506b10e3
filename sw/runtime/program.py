"""A bundle compiled for the device memory: parameter blocks, tensors and the program of
pass descriptors (`hw.spec.memory`) that runs the whole network on the device.

The compiler places every layer's output in a tensor and turns every layer into passes:

- a conv layer is one pass per output-channel group (`engine.group_size`), each reading
  the layer's input tensor and writing its channels of the output tensor;
- a 2x2 max pool right after a conv whose output nothing else reads runs fused in the
  engine's pool stage (`scheduler.fused_pool_mode`); any other max pool is a pass of an
  identity 1x1 convolution with the pool (weights 1, bias 0, shift 0, linear: exact);
- a route of several layers is one tensor: each source writes at its channel offset with
  the concatenation's pitch; a route of one layer is that layer's tensor;
- a nearest 2x upsample of a conv output is that conv writing in upsample mode;
- the detection heads (and yolo layers) need no pass: the host reads the head tensors.

Memory layout: `HEADER_BYTES` for the host's record of what is resident, the program,
the parameter blocks, then the tensors, each on a memory-word boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import HwConfig
from hw.spec.engine import (
    POOL_NONE,
    POOL_S1,
    POOL_S2,
    PassError,
    check_pass,
    engine_cycles,
    group_params,
    group_size,
    out_value_bytes,
    param_bytes,
)
from hw.spec.memory import PASS_BYTES, Pass, ProgramError
from sw.runtime.bundle import Bundle
from sw.runtime.scheduler import fused_pool_mode

__all__ = ["HEADER_BYTES", "NetworkImage", "TensorView", "compile_network"]

#: Bytes at address 0 kept for the host's record of the resident network.
HEADER_BYTES = 64


@dataclass(frozen=True)
class TensorView:
    """Where a layer's output lives: H x W x C values of `value_bytes` bytes, pixel (y, x)
    at ``addr + (y * W + x) * pitch`` (a view at a channel offset of a wider tensor has a
    pitch larger than C * value_bytes)."""

    addr: int
    height: int
    width: int
    channels: int
    pitch: int
    value_bytes: int = 1

    @property
    def nbytes(self) -> int:
        """Bytes from the first value to past the last."""
        return (self.height * self.width - 1) * self.pitch + self.channels * self.value_bytes

    def offset(self, channels: int, first: int) -> TensorView:
        """The view of `channels` channels starting at channel `first` of this one."""
        return TensorView(self.addr + first * self.value_bytes, self.height, self.width,
                          channels, self.pitch, self.value_bytes)

    def read(self, mem: np.ndarray) -> np.ndarray:
        """The values, (H, W, C) int64, out of a memory image (uint8 array)."""
        n = self.height * self.width
        rows = np.lib.stride_tricks.as_strided(
            mem[self.addr:], shape=(n, self.channels * self.value_bytes),
            strides=(self.pitch, 1))
        dt = np.int8 if self.value_bytes == 1 else np.dtype(f"<i{self.value_bytes}")
        vals = np.ascontiguousarray(rows).view(dt).reshape(self.height, self.width,
                                                            self.channels)
        return vals.astype(np.int64)

    def write(self, mem: np.ndarray, values: np.ndarray) -> None:
        """Store (H, W, C) values into a memory image."""
        dt = np.int8 if self.value_bytes == 1 else np.dtype(f"<i{self.value_bytes}")
        data = np.asarray(values).astype(dt).reshape(self.height * self.width, -1)
        rows = np.lib.stride_tricks.as_strided(
            mem[self.addr:], shape=(self.height * self.width, self.channels * self.value_bytes),
            strides=(self.pitch, 1), writeable=True)
        rows[:] = data.view(np.uint8)


@dataclass
class NetworkImage:
    """A bundle compiled for a device config: what to upload once, and where the
    per-frame input and the heads are."""

    cfg: HwConfig
    passes: list[Pass]
    #: the bundle layer each pass computes (a max pool's identity passes: the max pool)
    pass_layers: list[int]
    program_addr: int
    #: (address, bytes) to upload once: the program and the parameter blocks
    segments: list[tuple[int, bytes]]
    input: TensorView
    #: per bundle layer, where its output lives (None: fused away, never stored)
    layer_views: list[TensorView | None]
    heads: list[int]
    #: bytes of device memory used (from 0)
    end: int
    #: where the tensors begin (everything below is uploaded once)
    tensors_addr: int = 0
    #: per pass, its multiply-accumulates
    macs: list[int] = field(default_factory=list)

    @property
    def program(self) -> bytes:
        return b"".join(p.encode() for p in self.passes)

    @property
    def upload_bytes(self) -> int:
        return sum(len(data) for _, data in self.segments)

    def memory(self) -> np.ndarray:
        """A memory image (uint8, `end` bytes) holding the segments, tensors zero."""
        mem = np.zeros(self.end, np.uint8)
        for addr, data in self.segments:
            mem[addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        return mem


class _Alloc:
    def __init__(self, cfg: HwConfig, start: int) -> None:
        self.word = cfg.mem_word_bytes
        self.at = self._align(start)

    def _align(self, n: int) -> int:
        return -(-n // self.word) * self.word

    def take(self, nbytes: int) -> int:
        addr = self.at
        self.at = self._align(addr + nbytes)
        return addr

    def tensor(self, h: int, w: int, c: int, vb: int = 1) -> TensorView:
        return TensorView(self.take(h * w * c * vb), h, w, c, c * vb, vb)


def _consumers(layers: list[dict]) -> list[list[int]]:
    """Per layer, the layers that read its output (a yolo layer reads its head)."""
    out: list[list[int]] = [[] for _ in layers]
    for i, layer in enumerate(layers):
        srcs = layer["layers"] if layer["kind"] == "route" else [i - 1]
        for j in srcs:
            if j >= 0:
                out[j].append(i)
    return out


def _pool_mode(layer: dict, h: int, w: int) -> int:
    """The engine pool mode of a standalone 2x2 max pool layer, or ProgramError."""
    if layer["size"] == 2 and layer["stride"] == 2 and h % 2 == 0 and w % 2 == 0:
        return POOL_S2
    if layer["size"] == 2 and layer["stride"] == 1 and layer["padding"] == 1:
        return POOL_S1
    raise ProgramError(f"a {layer['size']}x{layer['size']} max pool of stride "
                       f"{layer['stride']} (padding {layer['padding']}) on a {h}x{w} map: the "
                       "engine pools 2x2 with stride 2 on even maps or stride 1 with padding 1")


def _pool_slice(cfg: HwConfig, h: int, w: int, c: int, pool: int) -> int:
    """Channels per pass of a standalone max pool, run as 1x1 identity convolutions on
    slices of its channels (a pass reads only its slice: a full-width identity would cost
    ``c / C`` array cycles per output channel): the slice (a multiple of array_rows, at
    most 64) with the fewest modeled cycles, counting ~100 cycles to start a pass."""
    best, best_cyc = 0, None
    for g in range(cfg.array_rows, min(max(c, cfg.array_rows), 64) + 1, cfg.array_rows):
        if group_size(cfg, 1, g) < g:
            break
        cyc = sum(engine_cycles(cfg, h, w, min(g, c - g0), min(g, c - g0), 1, pool) + 100
                  for g0 in range(0, c, g))
        if best_cyc is None or cyc < best_cyc:
            best, best_cyc = g, cyc
    return best


def compile_network(bundle: Bundle, cfg: HwConfig) -> NetworkImage:
    """Compile `bundle` for a device built for `cfg`. ProgramError (or PassError) for a
    network the device cannot run, or one that does not fit its memory."""
    bundle.check_numerics(cfg)
    layers = bundle.layers
    n = len(layers)
    users = _consumers(layers)
    shapes = [tuple(layer["shape"]) for layer in layers]
    heads = bundle.head_indices
    fused = [False] * n          # conv i runs with the max pool i + 1 in its pool stage
    for i, layer in enumerate(layers):
        if layer["kind"] == "conv" and users[i] == [i + 1] and i not in heads:
            h, w, cin = shapes[i - 1] if i else bundle.input_shape
            g = min(group_size(cfg, layer["size"], cin), layer["filters"])
            fused[i] = fused_pool_mode(cfg, layers, i, h, w, g) != POOL_NONE
    upsampled = [False] * n      # conv i writes the upsample i + 1's output
    for j, layer in enumerate(layers):
        if layer["kind"] == "upsample":
            if (layer["stride"] != 2 or j == 0 or layers[j - 1]["kind"] != "conv"
                    or users[j - 1] != [j] or fused[j - 1]):
                raise ProgramError(f"layer {j}: the device upsamples (2x) only the output of a "
                                   "conv that nothing else reads")
            upsampled[j - 1] = True

    # Code and parameters first, then tensors (their addresses go into the descriptors).
    n_passes = 0
    blocks: list[tuple[int, int, int, int]] = []   # (layer, g0, cout, param bytes)
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        if kind == "conv" or (kind == "maxpool" and not fused[i - 1]):
            h, w, cin = shapes[i - 1] if i else bundle.input_shape
            if kind == "conv":
                k, cout = layer["size"], layer["filters"]
                g = group_size(cfg, k, cin)
            else:
                k, cout = 1, cin
                g = _pool_slice(cfg, h, w, cin, _pool_mode(layer, h, w))
            if g == 0:
                raise PassError(f"layer {i}: {k}x{k}x{cin} weights of {cfg.array_rows} channels "
                                f"exceed the weight memory ({cfg.weight_mem_bytes} bytes)")
            for g0 in range(0, cout, g):
                gc = min(g, cout - g0)
                blocks.append((i, g0, gc, param_bytes(cfg, k, cin if kind == "conv" else gc,
                                                      gc)))
            n_passes += -(-cout // g)
    alloc = _Alloc(cfg, HEADER_BYTES)
    program_addr = alloc.take(n_passes * PASS_BYTES)
    param_at = {(i, g0): alloc.take(nb) for i, g0, _, nb in blocks}

    # Where every layer's output lives.
    views: list[TensorView | None] = [None] * n
    h0, w0, c0 = bundle.input_shape
    inp = alloc.tensor(h0, w0, c0)
    for r, layer in enumerate(layers):           # concatenations: one tensor, offsets
        if layer["kind"] == "route" and len(layer["layers"]) > 1:
            h, w, c = shapes[r]
            whole = alloc.tensor(h, w, c)
            views[r] = whole
            off = 0
            for j in layer["layers"]:
                if views[j] is not None or layers[j]["kind"] not in ("conv", "maxpool",
                                                                     "upsample"):
                    raise ProgramError(f"layer {r}: route source {j} must be a conv, max pool "
                                       "or upsample output that no other route holds")
                views[j] = whole.offset(shapes[j][2], off)
                off += shapes[j][2]
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        if views[i] is not None:
            continue
        if kind == "route":
            views[i] = views[layer["layers"][0]]
        elif kind == "yolo":
            views[i] = views[i - 1]
        elif kind == "conv" and (fused[i] or upsampled[i]):
            continue                                 # written as the next layer's output
        else:
            h, w, c = shapes[i]
            vb = out_value_bytes(cfg, layer.get("out_bits", cfg.act_bits) > cfg.act_bits)
            views[i] = alloc.tensor(h, w, c, vb)
        if views[i] is None:
            raise ProgramError(f"layer {i} ({kind}): its input is never stored")

    # The passes.
    passes: list[Pass] = []
    pass_layers: list[int] = []
    segments: list[tuple[int, bytes]] = []
    macs: list[int] = []
    for i, g0, gc, nb in blocks:
        layer = layers[i]
        src = views[i - 1] if i else inp
        if src is None:
            raise ProgramError(f"layer {i}: its input (layer {i - 1}) is never stored")
        h, w, cin = src.height, src.width, src.channels
        in_addr = src.addr
        if layer["kind"] == "conv":
            k, head = layer["size"], layer["out_bits"] > cfg.act_bits
            if layer["stride"] != 1 or layer["pad"] != k // 2:
                raise PassError(f"layer {i}: the engine runs stride-1 'same' convs, got size "
                                f"{k} stride {layer['stride']} pad {layer['pad']}")
            pool = (fused_pool_mode(cfg, layers, i, h, w, gc) if fused[i] else POOL_NONE)
            dst = views[i + 1] if (fused[i] or upsampled[i]) else views[i]
            data = group_params(cfg, bundle.weight(i)[g0:g0 + gc], bundle.bias(i)[g0:g0 + gc],
                                bundle.shift(i)[g0:g0 + gc])
            leaky = layer["activation"] == "leaky"
            macs.append(h * w * k * k * cin * gc)
        else:           # a standalone max pool: identity convs on slices of the channels
            k, head, leaky = 1, False, False
            pool = _pool_mode(layer, h, w)
            dst = views[i]
            cin, in_addr = gc, src.addr + g0
            eye = np.eye(gc, dtype=np.int8).reshape(gc, 1, 1, gc)
            data = group_params(cfg, eye, np.zeros(gc, np.int32), np.zeros(gc, np.int64))
            macs.append(0)                           # a max pool multiplies nothing
        assert len(data) == nb
        try:
            check_pass(cfg, h, w, cin, gc, k, pool, head)
        except PassError as e:
            raise PassError(f"layer {i}: {e}") from e
        p = Pass(width=w, height=h, cin=cin, cout=gc, k3=int(k == 3), leaky=int(leaky),
                 head=int(head), pool=pool, in_pitch=src.pitch, out_pitch=dst.pitch,
                 upsample=int(upsampled[i]), param_addr=param_at[(i, g0)], param_len=nb,
                 in_addr=in_addr, out_addr=dst.addr + g0 * dst.value_bytes)
        passes.append(p)
        pass_layers.append(i)
        segments.append((p.param_addr, data))
    image = NetworkImage(cfg, passes, pass_layers, program_addr, [], inp, views, heads,
                         alloc.at, inp.addr, macs)
    image.segments = [(program_addr, image.program), *segments]
    if image.end > cfg.mem_bytes:
        raise ProgramError(f"the network needs {image.end:,} bytes of device memory, the "
                           f"config has {cfg.mem_bytes:,}")
    for k, p in enumerate(passes):
        try:
            p.check(cfg)
        except ProgramError as e:
            raise ProgramError(f"pass {k} (layer {pass_layers[k]}): {e}") from e
    return image
