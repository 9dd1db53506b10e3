"""The network resident in the device memory: upload a compiled bundle once, then per frame
write the image, run the program and read the heads (the device's Feature.MEMORY).

Upload: the record at address 0 (`HEADER_BYTES`) is cleared first and written last, so a
device whose upload broke off never looks as if it held the network; the uploaded region
(program and parameter blocks) is checked with the device's CRC-32. A device that already
holds this exact network (same record, same CRC) is not uploaded to again; a different
bundle, or one for other number formats, replaces it.

Input: the first frame writes the whole int8 image; later frames write only the rows
that differ from the last image this object wrote (a letterboxed image's padding rows,
the static parts of a video), then check the device's CRC-32 of the whole input against
the new image and write it whole if they differ (the device was reset, or something else
wrote there), so the device always computes on exactly the image given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hw.spec import protocol
from hw.spec.config import HwConfig
from hw.spec.engine import out_value_bytes
from hw.spec.memory import PASS_BYTES, TRACE_BYTES, TRACE_FORMAT
from hw.spec.protocol import ProgramFlag
from sw.runtime.bundle import Bundle
from sw.runtime.device import Device, DeviceError
from sw.runtime.link import LinkError, LinkTimeout
from sw.runtime.program import HEADER_BYTES, NetworkImage, compile_network
from sw.runtime.shipped import shipped_bundle

__all__ = ["TRAIN_CYCLES", "FrameRun", "HeadFilter", "ResidentNetwork", "changed_rows",
           "memory_training"]

_MAGIC = b"TYNET\x00\x00\x01"
#: The record at address 0: magic, numerics id, config id, the bundle's content hash (16
#: bytes), program address, passes, tensors address, the uploaded region's SHA-256 (16).
_HEADER = "<8sII16sIHxxI16s"


def _header(image: NetworkImage, bundle: Bundle, cfg: HwConfig, region: bytes) -> bytes:
    """The record of a resident network (`_HEADER`)."""
    return struct.pack(_HEADER, _MAGIC, cfg.numerics_id, cfg.config_id,
                       bytes.fromhex(bundle.content_hash)[:16], image.program_addr,
                       len(image.passes), image.tensors_addr, hashlib.sha256(region).digest()[:16])


def changed_rows(old: bytes, new: bytes, row: int) -> list[tuple[int, int]]:
    """The byte ranges ``[lo, hi)`` of `new` covering its rows of `row` bytes that differ
    from `old` (same length), consecutive changed rows joined into one range."""
    a = np.frombuffer(old, np.uint8).reshape(-1, row)
    b = np.frombuffer(new, np.uint8).reshape(-1, row)
    diff = np.concatenate([[False], (a != b).any(axis=1), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(diff))
    return [(int(lo) * row, int(hi) * row) for lo, hi in zip(edges[::2], edges[1::2],
                                                             strict=True)]


@dataclass(frozen=True)
class HeadFilter:
    """Read only the records of a head (each anchor's `record_values` values of a cell)
    whose value at index `key` is above `threshold` (the device's MEM_MASK picks them)."""

    record_values: int
    key: int
    threshold: int


@dataclass
class FrameRun:
    """One frame on the device: the heads' integers per head layer, the frame's totals and
    per conv layer (and standalone max pool) statistics, as layer_report.json holds them."""

    heads: dict[int, np.ndarray]
    frame: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    trace: bytes = b""          # the passes' trace records (`hw.spec.memory.TRACE_FORMAT`)


class ResidentNetwork:
    """A bundle compiled for `cfg` and kept in the memory of `dev` (a device built for
    `cfg` with Feature.MEMORY, on a DRAM whose init succeeded; refused otherwise)."""

    def __init__(self, dev: Device, cfg: HwConfig, bundle: Bundle) -> None:
        dev.check_memory(dev.identify(expect=cfg))
        self.dev, self.cfg, self.bundle = dev, cfg, bundle
        self.image: NetworkImage = compile_network(bundle, cfg)
        self.trace = self.image.end
        self.upload_bytes = 0
        self._input: bytes | None = None     # the last input written (None: unknown)

    # -- upload ---------------------------------------------------------------------
    def _region(self) -> tuple[int, bytes]:
        mem = self.image.memory()
        lo, hi = self.image.program_addr, self.image.tensors_addr
        return lo, mem[lo:hi].tobytes()

    def _header(self, region: bytes) -> bytes:
        return _header(self.image, self.bundle, self.cfg, region)

    def resident(self) -> bool:
        """Whether the device holds this network already (its record and the region's
        CRC-32 match)."""
        lo, region = self._region()
        if self.dev.mem_read(0, struct.calcsize(_HEADER)) != self._header(region):
            return False
        return self.dev.mem_crc(lo, len(region)) == protocol.crc32(region)

    @staticmethod
    def preload_image_of(image: NetworkImage, bundle: Bundle, cfg: HwConfig) -> bytes:
        """The bytes a device holding `image` (`bundle` compiled for `cfg`) has from address
        0 to its tensors (the record included): for a simulator's backdoor
        (``--load 0:FILE``), so that tests need not push the network through the link."""
        lo, hi = image.program_addr, image.tensors_addr
        region = image.memory()[lo:hi].tobytes()
        head = _header(image, bundle, cfg, region)
        return head + bytes(lo - len(head)) + region

    def upload(self, progress: Callable[[str], None] | None = None, force: bool = False) -> int:
        """Put the network into the device memory unless it is there; bytes sent."""
        lo, region = self._region()
        if not force and self.resident():
            return 0
        t0 = time.monotonic()
        self._input = None
        self.dev.mem_write(0, bytes(HEADER_BYTES))
        every = max(len(region) // 20, 1)
        report = ((lambda n: progress(f"upload: {n:,} of {len(region):,} bytes") if
                   n // every != (n - protocol.MAX_PAYLOAD) // every else None)
                  if progress else None)
        self.dev.mem_write(lo, region, report)
        crc = self.dev.mem_crc(lo, len(region))
        if crc != protocol.crc32(region):
            raise LinkError(f"upload to {self.dev.link.name}: the device's CRC-32 {crc:08x} of "
                            f"the network differs from the host's {protocol.crc32(region):08x}")
        self.dev.mem_write(0, self._header(region))
        self.upload_bytes = len(region) + HEADER_BYTES
        if progress:
            progress(f"upload: {len(region):,} bytes in {time.monotonic() - t0:.1f} s, "
                     f"CRC-32 {crc:08x} checked")
        return self.upload_bytes

    # -- frames ---------------------------------------------------------------------
    def _write_input(self, data: bytes) -> int:
        """Write the frame's input (module docstring: only the changed rows when the last
        input written is known, then the device's CRC-32 checked); input bytes sent."""
        addr, prev = self.image.input.addr, self._input
        self._input = None                          # unknown until this write completes
        runs = ([(0, len(data))] if prev is None or len(prev) != len(data)
                else changed_rows(prev, data, len(data) // self.bundle.input_shape[0]))
        for lo, hi in runs:
            self.dev.mem_write(addr + lo, data[lo:hi])
        sent = sum(hi - lo for lo, hi in runs)
        if sent < len(data) and self.dev.mem_crc(addr, len(data)) != protocol.crc32(data):
            self.dev.mem_write(addr, data)
            sent += len(data)
        self._input = data
        return sent

    def run(self, x: np.ndarray, timeout: float = 3600.0,
            progress: Callable[[int, int], None] | None = None,
            filters: dict[int, HeadFilter] | None = None,
            span: tuple[int, int] | None = None) -> FrameRun:
        """One int8 input through the resident network: the heads and the statistics
        (`progress` gets passes done and passes while it runs). A head with a filter in
        `filters` (by layer index) is read as the records its filter keeps; in the head
        returned the others hold 0, their key int16's minimum.

        `span` = (lo, hi) runs passes lo .. hi - 1 of the program only (a simulation's frame
        split into spans, `joined`): the input is written only when lo = 0 and the heads
        read only when hi is the last pass; the memory must hold what passes 0 .. lo - 1
        wrote. The statistics are the span's."""
        im, dev = self.image, self.dev
        lo, hi = span or (0, len(im.passes))
        if not 0 <= lo < hi <= len(im.passes):
            raise ValueError(f"span ({lo}, {hi}) is not within the program's "
                             f"{len(im.passes)} passes")
        if x.dtype != np.int8 or x.shape != self.bundle.input_shape:
            raise ValueError(f"network input must be int8 {self.bundle.input_shape}, "
                             f"got {x.dtype} {x.shape}")
        out0, in0 = dev.bytes_out, dev.bytes_in
        sent = self._write_input(np.ascontiguousarray(x).tobytes()) if lo == 0 else 0
        dev.program_run(im.program_addr + lo * PASS_BYTES, hi - lo, self.trace)
        deadline = time.monotonic() + timeout
        pause = 0.01             # STATUS polls back off: few bytes on the link per frame
        while (st := dev.status()).program & ProgramFlag.RUNNING:
            if time.monotonic() > deadline:
                raise LinkTimeout(f"program on {dev.link.name}: still running after "
                                  f"{timeout:.0f} s (pass {lo + st.passes} of {len(im.passes)})")
            if progress:
                progress(lo + st.passes, len(im.passes))
            time.sleep(pause)
            pause = min(2 * pause, 1.0)
        if st.program_error or not st.program & ProgramFlag.DONE:
            at = min(lo + st.passes, len(im.passes) - 1)
            raise DeviceError(st.program_error, int(protocol.Op.PROGRAM_RUN),
                              f"program on {dev.link.name} stopped at pass {lo + st.passes} "
                              f"(layer {im.pass_layers[at]})")
        heads = {}
        h_out, h_in = dev.bytes_out, dev.bytes_in
        for i in im.heads if hi == len(im.passes) else ():
            v = im.layer_views[i]
            if filters and i in filters:
                heads[i] = self._filtered_head(i, filters[i])
                continue
            raw = np.frombuffer(dev.mem_read(v.addr, v.nbytes), np.uint8)
            heads[i] = dataclasses.replace(v, addr=0).read(raw)
        head_link = dev.bytes_out - h_out + dev.bytes_in - h_in
        link = dev.bytes_out - out0 + dev.bytes_in - in0
        trace = dev.mem_read(self.trace, TRACE_BYTES * (hi - lo))
        run = self._report(st.program_cycles, trace, link, lo)
        run.frame["head_link_bytes"] = head_link
        run.frame["input_bytes_sent"] = sent
        run.frame["heads_filtered"] = sorted(i for i in heads if filters and i in filters)
        run.heads, run.trace = heads, trace
        return run

    def joined(self, parts: list[FrameRun]) -> FrameRun:
        """One frame's run from the runs of its program's consecutive spans (`run`'s
        `span`, from pass 0 to the last): the heads of the last, the statistics as if the
        program had run whole (cycles, link bytes and trace records summed)."""
        trace = b"".join(p.trace for p in parts)
        if len(trace) != TRACE_BYTES * len(self.image.passes):
            raise ValueError(f"{len(trace) // TRACE_BYTES} passes in the spans, the program "
                             f"has {len(self.image.passes)}")
        total = {key: sum(p.frame[key] for p in parts)
                 for key in ("cycles", "link_bytes_per_frame", "head_link_bytes",
                             "input_bytes_sent")}
        run = self._report(total.pop("cycles"), trace, total.pop("link_bytes_per_frame"), 0)
        run.frame.update(total, heads_filtered=parts[-1].frame["heads_filtered"],
                         spans=len(parts))
        run.heads, run.trace = parts[-1].heads, trace
        return run

    def _filtered_head(self, layer: int, f: HeadFilter) -> np.ndarray:
        """Head `layer` as the records `f` keeps (MEM_MASK, then one MEM_READ per run of
        consecutive records kept)."""
        v = self.image.layer_views[layer]
        if (v.value_bytes != 2 or v.pitch != v.channels * 2 or v.channels % f.record_values
                or not 0 <= f.key < f.record_values):
            raise ValueError(f"layer {layer}: a head of {v.channels} int{8 * v.value_bytes} "
                             f"channels (pitch {v.pitch}) cannot be filtered as records of "
                             f"{f.record_values} values keyed at {f.key}")
        size = 2 * f.record_values
        n = v.height * v.width * v.channels // f.record_values
        keep = self.dev.mem_mask(v.addr, n, size, 2 * f.key, f.threshold)
        recs = np.zeros((n, f.record_values), np.int64)
        recs[:, f.key] = np.iinfo(np.int16).min
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            raw = self.dev.mem_read(v.addr + start * size, (stop - start) * size)
            recs[start:stop] = np.frombuffer(raw, "<i2").reshape(-1, f.record_values)
        return recs.reshape(v.height, v.width, v.channels)

    def _report(self, cycles: int, trace: bytes, link: int, first: int) -> FrameRun:
        """The statistics of the passes from `first` whose trace records `trace` holds."""
        im, cfg = self.image, self.cfg
        layers: dict[int, dict[str, Any]] = {}
        n = len(trace) // TRACE_BYTES
        frame = {"link_bytes_per_frame": link, "upload_bytes": self.upload_bytes,
                 "dram_read_bytes": 0, "dram_write_bytes": 0, "cycles": cycles,
                 "engine_cycles": 0, "model_cycles": 0, "memory_stall_cycles": 0,
                 "passes": n, "clock_hz": cfg.clock_hz}
        for k in range(first, first + n):
            p = im.passes[k]
            total, eng = struct.unpack_from(TRACE_FORMAT, trace, (k - first) * TRACE_BYTES)
            model = p.cycles(cfg)
            oh, ow = p.out_shape
            reads = 48 + p.param_len + p.height * p.width * p.cin
            writes = oh * ow * p.cout * out_value_bytes(cfg, bool(p.head)) * (4 if p.upsample
                                                                               else 1)
            e = layers.setdefault(im.pass_layers[k], {
                "layer": im.pass_layers[k], "passes": 0, "cycles": 0, "engine_cycles": 0,
                "model_cycles": 0, "macs": 0, "dram_read_bytes": 0, "dram_write_bytes": 0})
            e["passes"] += 1
            e["cycles"] += total
            e["engine_cycles"] += eng
            e["model_cycles"] += model
            e["macs"] += im.macs[k]
            e["dram_read_bytes"] += reads
            e["dram_write_bytes"] += writes + TRACE_BYTES
        for e in layers.values():
            e["utilization"] = e["macs"] / (cfg.macs_per_cycle * e["cycles"]) if e["cycles"] else 0
            e["model_utilization"] = (e["macs"] / (cfg.macs_per_cycle * e["model_cycles"])
                                      if e["model_cycles"] else 0)
            for key in ("dram_read_bytes", "dram_write_bytes", "engine_cycles", "model_cycles"):
                frame[key] += e[key]
        frame["macs"] = sum(e["macs"] for e in layers.values())
        frame["utilization"] = frame["macs"] / (cfg.macs_per_cycle * max(frame["cycles"], 1))
        frame["model_utilization"] = frame["macs"] / (cfg.macs_per_cycle
                                                      * max(frame["model_cycles"], 1))
        frame["memory_stall_cycles"] = frame["engine_cycles"] - frame["model_cycles"]
        frame["overhead_cycles"] = frame["cycles"] - frame["engine_cycles"]
        return FrameRun({}, frame, sorted(layers.values(), key=lambda e: e["layer"]))


#: Cycles of the memory top's profiling run (`memory_training`).
TRAIN_CYCLES = 2_000_000


def memory_training(cfg: HwConfig, build_dir: Path) -> tuple[str, ...]:
    """``python -m hw.simulator`` arguments that build the memory top's harness
    profile-guided (`sw.runtime.link.harness_binary`'s `train`; `hw.simulator.Training`):
    profiled on the first `TRAIN_CYCLES` cycles of the shipped network's program (its first
    layer, the start of the second) on a seeded random image, preloaded through the
    harness's backdoor (files in DIR/train/). () (a plain build) where the shipped bundle
    is for other number formats or does not fit `cfg`."""
    path = shipped_bundle(cfg)
    if path is None:
        return ()
    bundle = Bundle.load(path, expect=cfg)
    try:
        image = compile_network(bundle, cfg)
    except ValueError:                                  # the network does not fit cfg
        return ()
    folder = build_dir / "train"
    folder.mkdir(exist_ok=True)
    x = np.random.default_rng(0).integers(-128, 128, bundle.input_shape, dtype=np.int8)
    (folder / "network.bin").write_bytes(ResidentNetwork.preload_image_of(image, bundle, cfg))
    (folder / "input.bin").write_bytes(x.tobytes())
    (folder / "request.bin").write_bytes(protocol.encode_frame(
        protocol.Op.PROGRAM_RUN, struct.pack(protocol.PROGRAM_FORMAT, image.program_addr,
                                             len(image.passes), image.end)))
    harness = ("--load", f"0:{folder / 'network.bin'}",
               "--load", f"{image.input.addr}:{folder / 'input.bin'}",
               "--max-cycles", str(TRAIN_CYCLES))
    return ("--train-stdin", str(folder / "request.bin"),
            *(f"--train-arg={arg}" for arg in harness))
