"""A frame's program split into spans on simulators side by side (tests/split_frame.py, the
whole-frame test's and bench's way to use both cores): the cuts, the byte-for-byte memory
check, and a small network run in three spans, bit-exact, with its statistics joined."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hw.spec import intmath
from hw.spec.config import DEFAULT
from sw.runtime.device import Device
from sw.runtime.golden import GoldenModel
from sw.runtime.link import SimLink
from sw.runtime.program import compile_network
from sw.runtime.resident import FrameRun, ResidentNetwork
from tests.conftest import random_images, small_bundle
from tests.reference import check_layers, ref_program
from tests.split_frame import cuts, memory_mismatch, run_split_frame


@pytest.fixture(scope="module")
def small(small_net, small_model):
    bundle = small_bundle(small_net, small_model)
    x = intmath.quantize_input(random_images(1, small_net.width, seed=3)[0])
    return bundle, compile_network(bundle, DEFAULT), x


def test_cuts_balance_the_model_cycles(small) -> None:
    _, image, _ = small
    n = len(image.passes)
    assert cuts(image, DEFAULT, 1) == [0, n]
    at = cuts(image, DEFAULT, 3)
    assert at[0] == 0 and at[-1] == n and at == sorted(set(at)) and len(at) == 4
    assert cuts(image, DEFAULT, n) == list(range(n + 1))     # one pass each
    cyc = np.array([p.cycles(DEFAULT) for p in image.passes])
    spans = [cyc[a:b].sum() for a, b in itertools.pairwise(at)]
    # each span within one pass of a third of the program
    assert all(abs(s - cyc.sum() / 3) <= cyc.max() for s in spans), spans
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match="spans must be"):
            cuts(image, DEFAULT, bad)


def test_memory_mismatch_names_the_layer(small) -> None:
    _, image, x = small
    mem = image.memory()
    image.input.write(mem, x)
    want = ref_program(mem.copy(), image.passes, DEFAULT)
    assert memory_mismatch(image, want, want.copy()) is None
    i = next(i for i, v in enumerate(image.layer_views) if v is not None)
    got = want.copy()
    got[image.layer_views[i].addr + 1] ^= 0x40
    got[image.end - 1] ^= 1                     # past every view: counted, not first
    msg = memory_mismatch(image, want, got)
    assert msg is not None and msg.startswith("2 bytes differ, first at address "
                                              f"{image.layer_views[i].addr + 1:#x} (layer {i}'s")
    got = want.copy()
    got[:image.tensors_addr] ^= 0xff            # outside the tensor region: not compared
    assert memory_mismatch(image, want, got) is None


def test_small_network_in_three_spans_is_bit_exact(tmp_path, small) -> None:
    bundle, image, x = small
    split = run_split_frame(DEFAULT, bundle, image, x, tmp_path, spans=3)
    golden = GoldenModel(bundle).run(x, keep=True)
    assert check_layers(bundle, image, split.memory, golden) >= len(bundle.layers) - 3
    run = split.run
    assert sorted(run.heads) == image.heads
    for i, head in run.heads.items():
        assert np.array_equal(head, golden[i]), i
    f = run.frame
    assert f["spans"] == 3 and f["passes"] == len(image.passes)
    assert f["input_bytes_sent"] == x.size and f["cycles"] > f["model_cycles"] > 0
    assert sum(e["passes"] for e in run.layers) == len(image.passes)
    assert len(split.spans) == len(split.cpu_s) == len(split.mem_stats) == 3
    assert all(s["reads"] > 0 for s in split.mem_stats)


def test_spans_are_checked(small) -> None:
    bundle, image, x = small
    n = len(image.passes)
    with SimLink(DEFAULT, top="memory") as link:
        net = ResidentNetwork(Device(link), DEFAULT, bundle)
        for span in ((0, 0), (2, 1), (0, n + 1), (-1, 2)):
            with pytest.raises(ValueError, match="is not within the program"):
                net.run(x, span=span)
        with pytest.raises(ValueError, match=f"passes in the spans, the program has {n}"):
            net.joined([FrameRun({}, {"cycles": 0}, trace=b"\0" * 8)])
