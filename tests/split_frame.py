"""A whole frame on the simulated memory device, its program split into spans that run side
by side, each in its own simulator process (the machines have 2 cores; a single simulator
is one thread).

Span 0 starts from the preloaded network (the harness's backdoor) and the host writes the
image over the link, as a frame on a board; span j > 0 starts from the memory the program's
reference (`tests.reference.ref_program`) holds after the passes before it, preloaded
whole. Each span's memory at its end, dumped from the simulator, must equal the
reference's after the span byte for byte over the whole tensor region, so the spans compose
into one program run: every span started from exactly the memory the spans before it
left. (What the split does not check is state other than memory carried across a cut from
one pass to the next: each cut is one pass boundary of the program's 256, the others run as
on a board.) The heads are read over the link at the end of the last span; the statistics
are the spans' joined (`ResidentNetwork.joined`). Cycle counts differ from a single run by
the extra PROGRAM_RUN requests and the memory model's state (open rows, refresh) at a cut.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.spec.config import HwConfig
from sw.runtime.bundle import Bundle
from sw.runtime.device import Device
from sw.runtime.link import SimLink
from sw.runtime.program import NetworkImage
from sw.runtime.resident import FrameRun, ResidentNetwork, memory_training
from tests.reference import ref_program

__all__ = ["SplitFrame", "cuts", "memory_mismatch", "run_split_frame"]


@dataclass
class SplitFrame:
    """A split frame's run (the spans joined), the final memory image (0 .. the image's
    end, from the last span's dump) and per span its passes, simulator CPU seconds, wall
    seconds (from the simulator's start to its end) and memory model counts."""

    run: FrameRun
    memory: np.ndarray
    spans: list[tuple[int, int]]
    cpu_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    mem_stats: list[dict[str, int]] = field(default_factory=list)


def cuts(image: NetworkImage, cfg: HwConfig, spans: int) -> list[int]:
    """The first pass of each span and the program's end: spans of about equal cycles in
    the engine's schedule model (each cut after the pass that crosses its share), none
    empty."""
    n = len(image.passes)
    if not 1 <= spans <= n:
        raise ValueError(f"spans must be 1..{n}, got {spans}")
    ends = np.cumsum([p.cycles(cfg) for p in image.passes])
    out = [0]
    for j in range(1, spans):
        cut = int(np.searchsorted(ends, ends[-1] * j / spans)) + 1
        out.append(min(max(cut, out[-1] + 1), n - (spans - j)))
    return [*out, n]


def memory_mismatch(image: NetworkImage, want: np.ndarray, got: np.ndarray) -> str | None:
    """Where a memory image `got` differs from `want` over the tensor region (the first
    differing byte, the count, the layer whose tensor holds it), or None if equal."""
    lo, hi = image.tensors_addr, image.end
    diff = np.flatnonzero(want[lo:hi] != got[lo:hi])
    if diff.size == 0:
        return None
    a = lo + int(diff[0])
    owner = [i for i, v in enumerate(image.layer_views)
             if v is not None and v.addr <= a < v.addr + v.nbytes]
    where = f"layer {owner[0]}'s tensor" if owner else "no layer's tensor"
    return (f"{diff.size} bytes differ, first at address {a:#x} ({where}): expected "
            f"{want[a]}, got {got[a]}")


def run_split_frame(cfg: HwConfig, bundle: Bundle, image: NetworkImage, x: np.ndarray,
                    tmp: Path, spans: int = 2, timeout: float = 60.0) -> SplitFrame:
    """Run input `x` through `image` (`bundle` compiled for `cfg`) on `spans` simulators
    side by side (module docstring); raises AssertionError where a span's memory differs
    from the reference."""
    at = cuts(image, cfg, spans)
    pre = ResidentNetwork.preload_image_of(image, bundle, cfg)
    states = [image.memory()]                   # the reference after each cut's passes
    image.input.write(states[0], x)
    states[0][:len(pre)] = np.frombuffer(pre, np.uint8)
    for a, b in itertools.pairwise(at):
        states.append(ref_program(states[-1].copy(), image.passes[a:b], cfg))
    parts: list[FrameRun | None] = [None] * spans       # filled by the spans' threads
    nets: list[ResidentNetwork | None] = [None] * spans
    cpu, wall = [0.0] * spans, [0.0] * spans
    stats: list[dict[str, int]] = [{} for _ in range(spans)]
    errors: list[BaseException] = []

    def span(j: int) -> None:
        load, dump = tmp / f"span{j}.bin", tmp / f"span{j}-end.bin"
        load.write_bytes(pre if j == 0 else states[j].tobytes())
        args = ["--load", f"0:{load}", "--dump", f"0:{image.end}:{dump}"]
        t0 = time.perf_counter()
        try:
            with SimLink(cfg, top="memory", harness_args=args, train=memory_training) as link:
                nets[j] = ResidentNetwork(Device(link, timeout=timeout), cfg, bundle)
                parts[j] = nets[j].run(x, span=(at[j], at[j + 1]))
                cpu[j] = link.cpu_seconds() or 0.0
            stats[j] = link.mem_stats
        except BaseException as e:             # reraised by the caller's thread
            errors.append(e)
        wall[j] = time.perf_counter() - t0

    threads = [threading.Thread(target=span, args=(j,)) for j in range(spans)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    memory = np.fromfile(tmp / f"span{spans - 1}-end.bin", np.uint8)
    for j in range(spans):
        got = memory if j == spans - 1 else np.fromfile(tmp / f"span{j}-end.bin", np.uint8)
        bad = memory_mismatch(image, states[j + 1], got)
        assert bad is None, (f"span {j} (passes {at[j]} .. {at[j + 1] - 1}): the memory at its "
                             f"end differs from the reference's: {bad}")
    run = nets[-1].joined(parts)                # (joining reads no device)
    return SplitFrame(run, memory, list(itertools.pairwise(at)), cpu, wall, stats)
