"""Detection with a quantized bundle: the default bundle, and the backends that run one.

A `Backend` turns a letterboxed uint8 image into the detection heads (real values);
`Backend.detect` adds letterboxing, decoding and NMS. The runtime's backends execute a
bundle: "golden" (the NumPy integer model) and "sim" (the device through
`sw.runtime.device`: the Verilator simulator of the gateware, or a board on a serial
port). The float and fake-quant backends need torch and live in `sw.quant.pipeline`.
Nothing here imports torch or Amaranth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec import intmath
from hw.spec.config import HwConfig
from sw.runtime.bundle import Bundle
from sw.runtime.darknet import Network, YoloHead
from sw.runtime.device import DeviceModeError
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import (
    Detection,
    HeadSpec,
    Letterbox,
    detect,
    letterbox,
    objectness_floor,
)
from sw.runtime.resident import HeadFilter, memory_training
from sw.runtime.scheduler import LayerStats
from sw.runtime.shipped import load_network, shipped_bundle
from sw.runtime.util import Progress, log

__all__ = ["BACKENDS", "CALIB_DIR", "Backend", "head_filters", "head_specs", "load_network",
           "make_backend", "shipped_bundle"]

ROOT = Path(__file__).resolve().parents[2]
#: The public-domain Darknet sample photos shipped in the repo: demo and calibration set.
CALIB_DIR = ROOT / "assets"
#: Every backend name the CLI offers ("float" and "fakequant" from `sw.quant.pipeline`).
BACKENDS = ("float", "fakequant", "golden", "sim")


def head_specs(source: Network | Bundle) -> list[HeadSpec]:
    """The detection heads' decoding parameters of a parsed cfg or a bundle."""
    if isinstance(source, Bundle):
        return [HeadSpec("region" if y["region"] else "yolo",
                         tuple(tuple(a) for a in y["anchors"]), y["classes"])
                for y in source.layers if y["kind"] == "yolo"]
    return [HeadSpec("region" if y.region else "yolo", y.anchors, y.classes)
            for y in source.layers if isinstance(y, YoloHead)]


@dataclass
class Backend:
    """Turns a letterboxed uint8 image into real-valued HWC head outputs."""

    name: str
    size: int
    specs: list[HeadSpec]
    heads: Callable[[np.ndarray], list[np.ndarray]]
    #: device backends: per image, the run's statistics (`device_report`'s form)
    reports: list[dict] = field(default_factory=list)

    def detect(self, img: np.ndarray, conf: float = 0.25,
               nms: float = 0.45) -> tuple[list[Detection], Letterbox]:
        lb, box = letterbox(img, self.size)
        return detect(self.heads(lb), self.specs, box, conf, nms), box


def make_backend(name: str, bundle: Bundle, hw: HwConfig | None = None,
                 port: str | None = None, host: str | None = None,
                 filter_conf: float | None = None, filter_strict: bool = True,
                 level: bool = True) -> Backend:
    """A bundle's backend by name: "golden", or "sim" (the device: the Verilator simulator
    of the device with its memory built for `hw`, or with `port` the board on that serial
    port, or with `host` (``IP[:PORT]``) the board on Ethernet, which must identify as
    `hw`). `hw` defaults to the default HwConfig. With `filter_conf` a device with memory
    sends only the head candidates whose objectness can score above it (`head_filters`):
    detections at that threshold or above are unchanged. A streaming device cannot filter:
    `DeviceModeError` when `filter_strict`, else its heads come whole. `level`: read-level a
    board's DRAM that reports itself UNLEVELED before the upload (`Device.check_memory`)."""
    size = bundle.input_shape[0]
    if name == "golden":
        golden = GoldenModel(bundle)
        return Backend("golden", size, head_specs(bundle),
                       lambda lb: golden.heads(intmath.quantize_input(lb)))
    if name == "sim":
        return _device_backend(bundle, hw or HwConfig(), port, host, filter_conf,
                               filter_strict, level)
    raise ValueError(f"unknown backend {name!r} for a bundle (choose golden or sim; float "
                     "and fakequant: sw.quant.pipeline)")


def head_filters(bundle: Bundle, conf: float) -> dict[int, HeadFilter]:
    """Per head layer, the filter that keeps the candidates whose objectness logit is
    above `conf`'s (`objectness_floor`): every candidate `detect` keeps at `conf`."""
    return {i: HeadFilter(5 + spec.num_classes, 4,
                          objectness_floor(conf, bundle.layers[i]["f_out"]))
            for i, spec in zip(bundle.head_indices, head_specs(bundle), strict=True)}


def _device_backend(bundle: Bundle, hw: HwConfig, port: str | None,
                    host: str | None = None, filter_conf: float | None = None,
                    filter_strict: bool = True, level: bool = True) -> Backend:
    """The device as a backend. A device with memory (the simulator; boards with their
    DRAM) keeps the network resident: uploaded once (`sw.runtime.resident`), then per image
    only the input and the heads cross the link. A streaming device (today's board builds,
    `Feature.ENGINE` only) gets every layer's weights and input per image
    (`sw.runtime.scheduler`)."""
    from hw.spec.protocol import Feature
    from sw.runtime import probe
    from sw.runtime.device import Device
    from sw.runtime.link import SerialLink, SimLink
    from sw.runtime.resident import ResidentNetwork
    from sw.runtime.scheduler import run_network

    bundle.check_numerics(hw)
    if host:
        from sw.runtime.udplink import UdpLink, parse_host
        link = UdpLink(*parse_host(host))
    else:
        link = (SerialLink(port, hw.uart_baud) if port
                else SimLink(hw, top="memory", train=memory_training))
    try:
        ident = probe.identify(link, hw)    # a few seconds, then an error that says why
    except BaseException:
        link.close()
        raise
    if ident.ethernet:          # where the device answers UDP, whichever link found it
        log(f"Ethernet: {ident.ethernet}")
    dev = Device(link, timeout=30.0, level=level)
    size, name = bundle.input_shape[0], "board" if port or host else "sim"
    if ident.features & Feature.MEMORY:
        net = ResidentNetwork(dev, hw, bundle)
        if dev.leveling is not None:
            log(dev.leveling.describe())
        filters = head_filters(bundle, filter_conf) if filter_conf is not None else None
        net.upload(progress=log)

        def run_resident(lb: np.ndarray) -> list[np.ndarray]:
            with Progress(len(net.image.passes), f"{link.name}: passes", unit="pass") as bar:
                seen = [0]

                def step(done: int, _total: int) -> None:
                    bar.update(done - seen[0])
                    seen[0] = done
                res = net.run(intmath.quantize_input(lb), progress=step, filters=filters)
            backend.reports.append({"frame": res.frame, "layers": res.layers})
            return [res.heads[i].astype(np.float64) * 2.0 ** -bundle.layers[i]["f_out"]
                    for i in bundle.head_indices]
        backend = Backend(name, size, head_specs(bundle), run_resident)
        return backend
    if filter_conf is not None and filter_strict:
        link.close()
        raise DeviceModeError(f"{link.name} is a streaming device: it cannot filter the heads "
                              "(no device memory, no MEM_MASK)")
    if not ident.features & Feature.ENGINE:
        link.close()
        raise DeviceModeError(f"{link.name} has neither a layer engine nor device memory "
                              f"(features {ident.features!r}): it cannot run a network")

    def run_streaming(lb: np.ndarray) -> list[np.ndarray]:
        convs = sum(layer["kind"] == "conv" for layer in bundle.layers)
        with Progress(convs, f"{link.name}: layers", unit="layer") as bar:
            def step(msg: str) -> None:
                log(msg, progress=True)
                bar.update()
            res = run_network(dev, hw, bundle, intmath.quantize_input(lb), progress=step,
                              fuse_pool=True)
        backend.reports.append(streaming_report(res.stats, hw))
        return [res.outputs[i].astype(np.float64) * 2.0 ** -bundle.layers[i]["f_out"]
                for i in bundle.head_indices]
    backend = Backend(name, size, head_specs(bundle), run_streaming)
    return backend


def streaming_report(stats: list[LayerStats], hw: HwConfig) -> dict:
    """A streaming device's run in the report's form: the frame's totals and each conv
    layer's statistics (cycles, utilization, link bytes)."""
    layers = [dataclasses.asdict(s) for s in stats]
    frame = {"mode": "streaming", "cycles": sum(s.cycles for s in stats),
             "model_cycles": sum(s.model_cycles for s in stats),
             "link_bytes_per_frame": sum(s.bytes_in + s.bytes_out for s in stats),
             "clock_hz": hw.clock_hz}
    return {"frame": frame, "layers": layers}
