"""A user's own network: other class and anchor counts, and a YOLOv2-tiny-style [region]
head, on generated weights: PTQ, golden == fake-quant bit for bit, head SQNR against
float, decoding, the device program, and `sw/host.py --cfg --weights`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hw.spec import intmath
from hw.spec.config import HwConfig
from hw.spec.engine import PassError
from sw.quant.model import FakeQuantModel, FloatModel, float_heads
from sw.quant.tune import sqnr_db
from sw.runtime.bundle import Bundle, BundleError
from sw.runtime.darknet import DarknetError, Network, parse_cfg, write_weights
from sw.runtime.detect import CALIB_DIR, head_specs, make_backend
from sw.runtime.golden import GoldenModel
from sw.runtime.postprocess import decode_head, load_image
from sw.runtime.program import compile_network
from tests.conftest import random_images, random_params, small_bundle
from tests.reference import check_program
from tests.test_host_cli import host

#: Darknet's yolov2-tiny-voc anchors (grid cells).
V2_ANCHORS = "1.08,1.19, 3.42,4.41, 6.63,11.38, 9.42,5.11, 16.62,10.52"


def _conv(filters: int, size: int = 3, activation: str = "leaky", bn: bool = True) -> str:
    return (f"[convolutional]\nbatch_normalize={int(bn)}\nfilters={filters}\nsize={size}\n"
            f"stride=1\npad=1\nactivation={activation}\n\n")


def _pool(stride: int = 2) -> str:
    return f"[maxpool]\nsize=2\nstride={stride}\n\n"


def _net(size: int) -> str:
    return (f"[net]\nbatch=64\nsubdivisions=2\nwidth={size}\nheight={size}\nchannels=3\n"
            "momentum=0.9\nlearning_rate=0.001\n\n")


def yolov3_tiny_like(classes: int, per_head: int = 3, size: int = 64) -> str:
    """Tiny-YOLOv3's graph (five stride-2 max pools, a stride-1 one, a 1x1 bottleneck, two
    [yolo] heads, route, upsample and concatenation) with fewer filters."""
    anchors = ", ".join(f"{6 * (k + 1)},{7 * (k + 1)}" for k in range(2 * per_head))
    out = per_head * (5 + classes)

    def yolo(mask: range) -> str:
        return (f"[yolo]\nmask={','.join(map(str, mask))}\nanchors={anchors}\n"
                f"classes={classes}\nnum={2 * per_head}\njitter=.3\nignore_thresh=.7\n"
                "truth_thresh=1\nrandom=1\n\n")
    text = _net(size)
    for f in (8, 16, 16, 32, 32):
        text += _conv(f) + _pool()
    text += _conv(64) + _pool(1) + _conv(128) + _conv(32, 1) + _conv(64)
    text += _conv(out, 1, "linear", False) + yolo(range(per_head, 2 * per_head))
    text += "[route]\nlayers=-4\n\n" + _conv(16, 1) + "[upsample]\nstride=2\n\n"
    text += "[route]\nlayers=-1, 8\n\n" + _conv(32) + _conv(out, 1, "linear", False)
    return text + yolo(range(per_head))


def yolov2_tiny_like(classes: int = 20, size: int = 64,
                     filters: tuple[int, ...] = (8, 16, 16, 32, 32, 64, 128, 64),
                     region: str = "softmax=1\n") -> str:
    """YOLOv2-tiny's graph: six 3x3 convs each with a max pool (the last of stride 1), two
    3x3 convs, a 1x1 head and a [region] layer of five anchors (Darknet's VOC anchors)."""
    text = _net(size)
    for k, f in enumerate(filters[:6]):
        text += _conv(f) + _pool(1 if k == 5 else 2)
    text += _conv(filters[6]) + _conv(filters[7]) + _conv(5 * (5 + classes), 1, "linear", False)
    return text + (f"[region]\nanchors={V2_ANCHORS}\nbias_match=1\nclasses={classes}\ncoords=4\n"
                   f"num=5\n{region}jitter=.2\nrescore=1\nobject_scale=5\nnoobject_scale=1\n"
                   "class_scale=1\ncoord_scale=1\nabsolute=1\nthresh=.6\nrandom=1\n")


CFGS = {
    "v3-1class-2anchors": yolov3_tiny_like(1, per_head=2),
    "v3-20class": yolov3_tiny_like(20),
    "v2-region-20class": yolov2_tiny_like(20),
    "v2-region-1class": yolov2_tiny_like(1),
}


@pytest.fixture(scope="module", params=sorted(CFGS))
def user_model(request) -> tuple[str, Network, FloatModel, Bundle]:
    """(name, network, float model, PTQ bundle) of each cfg on generated weights."""
    net = parse_cfg(CFGS[request.param], f"{request.param}.cfg")
    model = FloatModel(net, random_params(net, seed=3)).eval()
    return request.param, net, model, small_bundle(net, model)


def test_parsed_heads(user_model) -> None:
    name, net, _, bundle = user_model
    specs = head_specs(bundle)
    assert specs == head_specs(net)
    classes = 1 if "1class" in name else 20
    assert {s.num_classes for s in specs} == {classes}
    if name.startswith("v2"):
        assert [(s.kind, len(s.anchors)) for s in specs] == [("region", 5)]
        assert specs[0].anchors[2] == (6.63, 11.38)
    else:
        per_head = 2 if "2anchors" in name else 3
        assert [(s.kind, len(s.anchors)) for s in specs] == [("yolo", per_head)] * 2


def test_golden_equals_fakequant_and_tracks_float(user_model, tmp_path) -> None:
    """The bundle survives a save and load (validation), golden == fake-quant on every
    layer, and the int8 heads stay close to the float ones."""
    name, net, model, bundle = user_model
    bundle = Bundle.load(bundle.save(tmp_path / f"{name}.npz"))
    golden, fq, fl = GoldenModel(bundle), FakeQuantModel(bundle), float_heads(model)
    for img in random_images(2, net.width, seed=21):
        x = intmath.quantize_input(img)
        g = golden.run(x)
        f = fq.ints(fq(x, keep=True))
        for i, (a, b) in enumerate(zip(g, f, strict=True)):
            assert a.shape == b.shape and np.array_equal(a, b), f"{name} layer {i}"
        heads = golden.heads(x)
        for ref, q in zip(fl(img), heads, strict=True):
            assert 20 < sqnr_db(ref, q) < 60, name
        for head, spec in zip(heads, head_specs(bundle), strict=True):
            boxes, obj, probs = decode_head(head, spec, net.width)
            n = head.shape[0] * head.shape[1] * len(spec.anchors)
            assert boxes.shape == (n, 4) and obj.shape == (n,)
            assert probs.shape == (n, spec.num_classes)
            if spec.kind == "region":          # softmax over the classes
                assert np.allclose(probs.sum(axis=1), 1.0)


def test_compiles_for_the_device_and_runs_bit_exact(user_model) -> None:
    """The program of the network on the default device config, executed by the reference
    engine, stores every layer exactly as the golden model computes it."""
    name, net, _, bundle = user_model
    image = compile_network(bundle, HwConfig())
    assert [image.layer_views[i].channels for i in image.heads] == [
        bundle.layers[i]["filters"] for i in bundle.head_indices]
    x = intmath.quantize_input(random_images(1, net.width, seed=5)[0])
    assert check_program(bundle, image, x) >= len(net.conv_indices) - 2, name


def test_full_size_yolov2_tiny_does_not_fit_the_default_engine() -> None:
    """YOLOv2-tiny-voc's filter counts: its 3x3 conv over 1024 channels (layer 13) needs
    more than the default engine's weight memory for one group of output channels; an
    engine with 80 KiB of weight memory runs it bit-exact."""
    net = parse_cfg(yolov2_tiny_like(20, 32, (16, 32, 64, 128, 256, 512, 1024, 1024)))
    bundle = small_bundle(net, FloatModel(net, random_params(net)).eval())
    assert bundle.weight(13).shape == (1024, 3, 3, 1024)
    with pytest.raises(PassError, match=r"layer 13: 3x3x1024 weights .* exceed the weight "
                                        r"memory \(36864 bytes\)"):
        compile_network(bundle, HwConfig())
    image = compile_network(bundle, HwConfig(weight_mem_bytes=81920))
    x = intmath.quantize_input(random_images(1, net.width, seed=6)[0])
    assert check_program(bundle, image, x) >= len(net.conv_indices)


@pytest.mark.parametrize("name, text, needle", [
    ("no-softmax", yolov2_tiny_like(region=""), "softmax=1 is required"),
    ("softmax0", yolov2_tiny_like(region="softmax=0\n"), "softmax=1 is required"),
    ("tree", yolov2_tiny_like(region="softmax=1\ntree=data/9k.tree\n"), "'tree'"),
    ("background", yolov2_tiny_like(region="softmax=1\nbackground=1\n"), "background=1"),
    ("scale_x_y", yolov3_tiny_like(2).replace("jitter=.3", "scale_x_y=1.05", 1), "scale_x_y"),
    ("new_coords", yolov3_tiny_like(2).replace("jitter=.3", "new_coords=1", 1), "new_coords"),
])
def test_head_options_the_decoder_does_not_follow_are_refused(name, text, needle) -> None:
    with pytest.raises(DarknetError, match=needle) as e:
        parse_cfg(text, f"{name}.cfg")
    assert str(e.value).startswith(f"{name}.cfg:")
    ok = parse_cfg(yolov3_tiny_like(2).replace("jitter=.3", "scale_x_y=1.0", 1))
    assert ok.layers[-1].classes == 2


def _edited(bundle: Bundle, edit) -> Bundle:
    manifest = json.loads(json.dumps(bundle.manifest))
    edit(manifest["layers"])
    return Bundle(manifest, dict(bundle.arrays))


@pytest.mark.parametrize("edit, needle", [
    (lambda ls: ls[-1].update(classes=21), r"5 anchors x \(5 \+ 21 classes\) need 130"),
    (lambda ls: ls[-1].update(classes=0), "classes must be a positive integer"),
    (lambda ls: ls[-1].update(anchors=[[1.0, -2.0]] * 5), "positive"),
    (lambda ls: ls[-1].update(region="yes"), "region must be"),
    (lambda ls: ls[-2].update(head=False), "head=False, but it feeds a detection layer"),
    (lambda ls: ls[-3].update(head=True), "head=True, but it does not feed"),
])
def test_bundle_validation_of_detection_layers(edit, needle) -> None:
    net = parse_cfg(CFGS["v2-region-20class"])
    bundle = small_bundle(net, FloatModel(net, random_params(net)).eval())
    with pytest.raises(BundleError, match=needle):
        _edited(bundle, edit).seal()


@pytest.mark.parametrize("name", ["v3-1class-2anchors", "v2-region-20class"])
def test_host_cli_on_a_users_cfg_and_weights(tmp_path, name) -> None:
    """`sw/host.py --cfg --weights --backend golden` calibrates a bundle on the sample
    photos, detects, and writes what the golden backend of that bundle finds."""
    net = parse_cfg(CFGS[name])
    cfg, weights = tmp_path / f"{name}.cfg", tmp_path / f"{name}.weights"
    cfg.write_text(CFGS[name])
    write_weights(weights, net, random_params(net, seed=3))
    cache, out = tmp_path / "cache", tmp_path / "out"
    r = host("--image", "dog.jpg", "--cfg", str(cfg), "--weights", str(weights),
             "--backend", "golden", "--conf", "0.05", "--out", str(out),
             env={"TINYYOLO_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    dets = json.loads((out / "detections.json").read_text())
    classes = net.layers[-1].classes
    assert dets and all(d["class_name"] == f"class{d['class_id']}" and
                        d["category_id"] == d["class_id"] + 1 and d["class_id"] < classes
                        for d in dets)
    bundle = Bundle.load(*(cache / "bundles").glob("custom-*.npz"))
    assert bundle.manifest["provenance"]["cfg"] == cfg.name
    want, _ = make_backend("golden", bundle).detect(load_image(CALIB_DIR / "dog.jpg"), 0.05)
    assert sorted((d.class_id, round(d.score, 5)) for d in want) == sorted(
        (d["class_id"], d["score"]) for d in dets)
    r = host("--image", "dog.jpg", "--cfg", str(cfg), "--weights", str(weights),
             "--backend", "float", "--out", str(tmp_path / "float"))
    assert r.returncode == 0 and (tmp_path / "float" / "detections.json").exists(), r.stderr
