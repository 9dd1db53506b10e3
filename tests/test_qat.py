"""QAT: the student starts as the PTQ bundle, learns, and exports bit-exact bundles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hw.spec import intmath
from sw.quant.model import FakeQuantModel
from sw.quant.qat import QATModel, QatOptions, distill
from sw.runtime.golden import GoldenModel
from sw.runtime.graph import scale_groups
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


def test_scale_groups_tie_concatenated_tensors(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    groups = scale_groups(ptq.layers)
    convs = [i for i, layer in enumerate(ptq.layers) if layer["kind"] == "conv"]
    assert sorted(i for g in groups for i in g) == convs
    route = next(i for i, layer in enumerate(ptq.layers)
                 if layer["kind"] == "route" and len(layer["layers"]) > 1)
    # the small net's route concatenates the upsampled conv 12 with conv 2
    shared = next(g for g in groups if 2 in g)
    assert len(shared) == 2 and shared[1] < route


def _check_bit_exact(bundle, img) -> None:
    golden, fq = GoldenModel(bundle), FakeQuantModel(bundle)
    x = intmath.quantize_input(img)
    for i, (a, b) in enumerate(zip(golden.run(x), fq.ints(fq(x, keep=True)), strict=True)):
        assert np.array_equal(a, b), f"layer {i}"


def test_learned_scales_start_at_the_bundle_and_export_moved_scales(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq, learn_scales=True)
    same = student.export()
    assert same.layers == ptq.layers and all(
        np.array_equal(same.arrays[k], v) for k, v in ptq.arrays.items())
    # one bit coarser for every learned group (t + 1): f_out - 1, consumers follow; a head
    # keeps its scale unless its shift would turn negative
    with torch.no_grad():
        student.log2t += 1.0
    moved = student.export()
    heads = set(ptq.head_indices)
    for i, (a, b) in enumerate(zip(ptq.layers, moved.layers, strict=True)):
        if a["kind"] != "conv":
            continue
        if ptq.inputs_of(i)[0] >= 0:
            assert b["f_in"] == a["f_in"] - 1, i
        want = min(a["f_out"], b["f_in"] + ptq.f_w(i).min()) if i in heads else a["f_out"] - 1
        assert b["f_out"] == want, i
    img = random_images(1, small_net.width, seed=9)[0]
    _check_bit_exact(moved, img)
    # the student computes what the exported bundle computes (float32: rare ties)
    x = intmath.quantize_input(img)
    with torch.no_grad():
        heads_s = student(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    for h, g in zip(heads_s, GoldenModel(moved).heads(x), strict=True):
        assert (np.abs(h[0].permute(1, 2, 0).double().numpy() - g) > 0).mean() < 0.01


def test_learned_scales_get_gradients_and_train(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq, learn_scales=True)
    imgs = random_images(6, small_net.width, seed=4)
    start = student.log2t.detach().clone()
    losses = distill(student, small_model, imgs,
                     QatOptions(steps=30, batch=3, lr=3e-3, scale_lr=0.1))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    assert not torch.equal(student.log2t.detach(), start)
    trained = student.export({"steps": 30})
    _check_bit_exact(trained, imgs[0])


def test_fixed_scales_do_not_move(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq)
    distill(student, small_model, random_images(3, small_net.width, seed=2),
            QatOptions(steps=3, batch=2, lr=1e-3, scale_lr=10.0))
    assert student.export().layers == ptq.layers


def test_mse_loss_trains_and_bad_loss_is_refused(small_net, small_model):
    ptq = small_bundle(small_net, small_model)
    student = QATModel(small_model, ptq, learn_scales=True)
    imgs = random_images(4, small_net.width, seed=6)
    losses = distill(student, small_model, imgs,
                     QatOptions(steps=25, batch=2, lr=3e-3, scale_lr=0.05, loss="mse"))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    _check_bit_exact(student.export(), imgs[1])
    with pytest.raises(ValueError, match="loss must be one of"):
        QatOptions(loss="l1")
