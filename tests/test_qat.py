"""QAT: the student starts as the PTQ bundle, learns, and exports bit-exact bundles."""

from __future__ import annotations

import numpy as np
import torch

from sw import intmath
from sw.golden import GoldenModel
from sw.model import FakeQuantModel
from sw.qat import QATModel, QatOptions, distill
from tests.conftest import random_images, small_bundle


def test_student_starts_as_the_ptq_bundle(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq)
    exported = student.export()
    for k, v in ptq.arrays.items():
        assert np.array_equal(exported.arrays[k], v), k
    # and computes what the golden model computes (float32: equal up to rare ties)
    img = random_images(1, small_net.width, seed=5)[0]
    x = intmath.quantize_input(img)
    with torch.no_grad():
        heads = student(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    golden = GoldenModel(ptq).heads(x)
    for h, g in zip(heads, golden, strict=True):
        diff = np.abs(h[0].permute(1, 2, 0).double().numpy() - g)
        assert (diff > 0).mean() < 0.01


def test_distillation_learns_and_exports_bit_exact(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq)
    imgs = random_images(6, small_net.width, seed=3)
    losses = distill(student, small_model, imgs, QatOptions(steps=40, batch=3, lr=3e-3))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    trained = student.export({"steps": 40})
    assert any(not np.array_equal(trained.arrays[k], ptq.arrays[k]) for k in ptq.arrays)
    assert trained.manifest["quantization"]["qat"] == {"steps": 40}
    golden, fq = GoldenModel(trained), FakeQuantModel(trained)
    x = intmath.quantize_input(imgs[0])
    for i, (a, b) in enumerate(zip(golden.run(x), fq.ints(fq(x, keep=True)), strict=True)):
        assert np.array_equal(a, b), f"layer {i}"
