"""`python sw/host.py`: detections, outputs, and clear errors with non-zero exits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.spec.config import HwConfig
from sw.runtime.postprocess import COCO80_TO_91, class_names

ROOT = Path(__file__).resolve().parent.parent


def host(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess:
    """Run the CLI; the golden backend unless the call names one (the default, the
    simulated RTL, takes minutes per frame: tests/test_driver.py and sim/ cover it)."""
    if "--backend" not in args:
        args = ("--backend", "golden", *args)
    return subprocess.run([sys.executable, str(ROOT / "sw" / "host.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": "", **(env or {})})


@pytest.fixture(scope="module", autouse=True)
def _bundle_ready(pretrained_bundle):
    """Build the default bundle once, so the CLI runs below do not race to build it."""


def test_dog_golden_writes_outputs(tmp_path):
    r = host("--image", "dog.jpg", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "bicycle" in r.stdout
    dets = json.loads((tmp_path / "detections.json").read_text())
    assert (tmp_path / "dog.png").stat().st_size > 10_000
    names = class_names()
    assert {d["class_name"] for d in dets} >= {"dog", "bicycle"}
    for d in dets:
        assert set(d) == {"file_name", "bbox", "score", "class_id", "class_name", "category_id"}
        assert d["file_name"] == "dog.jpg" and len(d["bbox"]) == 4 and 0 < d["score"] <= 1
        assert d["category_id"] == COCO80_TO_91[d["class_id"]]
        assert d["class_name"] == names[d["class_id"]]
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 768.01 and y + h <= 576.01  # dog.jpg is 768x576
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_folder_gives_one_json(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("dog.jpg", "person.jpg"):
        shutil.copy(ROOT / "assets" / name, imgs / name)
    out = tmp_path / "out"
    r = host("--image", str(imgs), "--out", str(out), "--backend", "fakequant")
    assert r.returncode == 0, r.stderr
    dets = json.loads((out / "detections.json").read_text())
    assert {d["file_name"] for d in dets} == {"dog.jpg", "person.jpg"}
    assert (out / "dog.png").exists() and (out / "person.png").exists()
    assert "[2/2] person.jpg" in r.stdout


def test_float_backend():
    r = host("--image", str(ROOT / "assets" / "dog.jpg"), "--backend", "float")
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "(float," in r.stdout


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.jpg", "no such file"),
    (lambda d: _write(d / "t.jpg", "not an image"), "t.jpg"),
    (lambda d: d, "no images"),
])
def test_bad_images_exit_2_and_write_nothing(tmp_path, make, needle):
    src = make(tmp_path)
    out = tmp_path / "out"
    r = host("--image", str(src), "--out", str(out))
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and needle in r.stderr and "Traceback" not in r.stderr
    assert not (out / "detections.json").exists()


def test_bad_image_in_folder_writes_nothing(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(ROOT / "assets" / "dog.jpg", imgs / "a.jpg")
    (imgs / "b.jpg").write_bytes((ROOT / "assets" / "dog.jpg").read_bytes()[:300])
    out = tmp_path / "out"
    r = host("--image", str(imgs), "--out", str(out))
    assert r.returncode == 2 and "b.jpg" in r.stderr
    assert not out.exists()              # found before any work


def test_bad_bundle_and_config(tmp_path, pretrained_bundle):
    (tmp_path / "b.npz").write_bytes(b"PK\x03\x04garbage")
    r = host("--image", "dog.jpg", "--bundle", str(tmp_path / "b.npz"))
    assert r.returncode == 2 and "corrupt" in r.stderr
    other = tmp_path / "head12.json"
    HwConfig(head_bits=12).save(other)
    good = tmp_path / "good.npz"
    pretrained_bundle.save(good)
    r = host("--image", "dog.jpg", "--bundle", str(good), "--hw-config", str(other))
    assert r.returncode == 2 and "quantize the network again" in r.stderr
    (tmp_path / "bad.json").write_text("{")
    r = host("--image", "dog.jpg", "--hw-config", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "invalid JSON" in r.stderr


def test_bad_cfg_and_weights(tmp_path):
    r = host("--image", "dog.jpg", "--weights", str(tmp_path / "missing.weights"))
    assert r.returncode == 2 and "missing.weights: cannot read" in r.stderr
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=416\nheight=416\n[convolutional]\nactivation=leaky\nfilters=x\n")
    (tmp_path / "w.weights").write_bytes(b"\0" * 64)
    r = host("--image", "dog.jpg", "--cfg", str(cfg), "--weights", str(tmp_path / "w.weights"))
    assert r.returncode == 2 and "bad.cfg:6:" in r.stderr
    good_cfg = ROOT / "sw" / "runtime" / "data" / "yolov3-tiny.cfg"
    r = host("--image", "dog.jpg", "--cfg", str(good_cfg), "--weights",
             str(tmp_path / "w.weights"))
    assert r.returncode == 2 and "truncated" in r.stderr


def test_argument_errors():
    r = host("--image", "dog.jpg", "--conf", "2")
    assert r.returncode == 2 and "--conf" in r.stderr
    r = host("--image", "dog.jpg", "--backend", "fpga")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    for bad in (("--backend", "golden"), ("--conf", "0")):
        r = host("--image", "dog.jpg", "--filter-heads", *bad)
        assert r.returncode == 2 and "--filter-heads needs" in r.stderr, bad


def test_own_calibration_folder_builds_its_own_bundle(tmp_path):
    """--calib builds a bundle cached under a key of the images' contents (a fresh cache
    here; the weights are the fetched ones, named explicitly)."""
    from sw.runtime.bundle import Bundle
    from sw.runtime.weights import fetch_weights
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("eagle.jpg", "horses.jpg"):
        shutil.copy(ROOT / "assets" / name, calib / f"mine-{name}")
    cache = tmp_path / "cache"
    args = ("--image", "dog.jpg", "--calib", str(calib), "--weights", str(fetch_weights()))
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert "dog" in r.stdout and "calibrating on 2 images" in r.stderr
    (path,) = (cache / "bundles").glob("custom-*.npz")
    calibration = Bundle.load(path).manifest["provenance"]["calibration"]
    assert calibration == ["mine-eagle.jpg", "mine-horses.jpg"]
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})        # cached: no calibration
    assert r.returncode == 0 and "calibrating" not in r.stderr, r.stderr
    # the key is the images' contents: another image under the same name is a new bundle
    shutil.copy(ROOT / "assets" / "kite.jpg", calib / "mine-horses.jpg")
    r = host(*args, env={"TINYYOLO_CACHE": str(cache)})
    assert r.returncode == 0 and "calibrating on 2 images" in r.stderr, r.stderr
    assert len(list((cache / "bundles").glob("custom-*.npz"))) == 2


# -- every failure: one `error:` line, exit 2, nothing written ---------------------------
def _one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed cleanly: exit 2, the last stderr line `error: ...` holding every
    needle, no traceback; returns that line."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), r.stderr
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def _tiny_bundle(tmp_path: Path, name: str, edit) -> Path:
    """A bundle of the small test network with its cfg text changed by `edit`."""
    from sw.quant.model import FloatModel
    from sw.runtime.darknet import parse_cfg

    from .conftest import SMALL_CFG, random_params, small_bundle

    net = parse_cfg(edit(SMALL_CFG), f"{name}.cfg")
    path = tmp_path / f"{name}.npz"
    small_bundle(net, FloatModel(net, random_params(net)).eval()).save(path)
    return path


def _classes(n: int):
    return lambda cfg: cfg.replace("classes=2", f"classes={n}").replace(
        "filters=21", f"filters={3 * (5 + n)}")


@pytest.mark.parametrize("backend", ["golden", "float"])
def test_non_square_cfg(tmp_path, backend):
    from sw.runtime.weights import fetch_weights
    cfg = tmp_path / "wide.cfg"
    cfg.write_text((ROOT / "sw/runtime/data/yolov3-tiny.cfg").read_text()
                   .replace("height=416", "height=320"))
    r = host("--image", "dog.jpg", "--cfg", str(cfg), "--weights", str(fetch_weights()),
             "--backend", backend, "--out", str(tmp_path / "out"))
    _one_error(r, "wide.cfg", "416 wide and 320 high", "square")
    assert list((tmp_path / "out").iterdir()) == []      # created, left empty


def test_layer_the_engine_cannot_run(tmp_path):
    """A stride-2 conv on the simulated device: PassError before anything is computed."""
    bundle = _tiny_bundle(tmp_path, "stride2", lambda cfg: cfg.replace(
        "filters=8\nsize=3\nstride=1", "filters=8\nsize=3\nstride=2", 1).replace(
        "width=32\nheight=32", "width=64\nheight=64"))
    r = host("--image", "dog.jpg", "--bundle", str(bundle), "--backend", "sim")
    _one_error(r, "layer 0", "stride-1", "stride 2")


def test_dot_product_beyond_the_accumulator(tmp_path):
    """acc_bits=28 holds 4,128 terms; Tiny-YOLOv3's 3x3x512 layers sum 4,608: refused
    before calibrating."""
    cfg = tmp_path / "acc28.json"
    HwConfig(acc_bits=28).save(cfg)
    r = host("--image", "dog.jpg", "--hw-config", str(cfg))
    _one_error(r, "yolov3-tiny.cfg", "4608 products", "acc_bits=28", "--hw-config")
    assert " images from " not in r.stderr          # build_bundle stopped before


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe\x00{", "not a JSON text file"),
    (b'{"array_rows": "eight"}', "array_rows must be a positive integer, got 'eight'"),
    (b'{"array_rows": 8, "colour": 1}', "unknown HwConfig field(s): colour"),
])
def test_unreadable_board_config(tmp_path, content, needle):
    bad = tmp_path / "ulx3s_85f.json"
    bad.write_bytes(content)
    _one_error(host("--image", "dog.jpg", "--hw-config", str(bad)), "ulx3s_85f.json", needle)


def test_folder_with_one_unreadable_image_stops_before_work(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(ROOT / "assets" / "dog.jpg", imgs / "a.jpg")
    (imgs / "b.jpg").symlink_to(tmp_path / "gone.jpg")          # a dangling link
    (imgs / "c.jpg").write_bytes(b"GIF89a but not really")
    (imgs / "folder.jpg").mkdir()                                  # not an image: skipped
    out = tmp_path / "out"
    r = host("--image", str(imgs), "--out", str(out))
    _one_error(r, "b.jpg", "no such file")
    assert "a.jpg" not in r.stdout and not out.exists()
    (imgs / "b.jpg").unlink()
    _one_error(host("--image", str(imgs), "--out", str(out)), "c.jpg", "not a recognized image")


def test_out_that_is_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    _one_error(host("--image", "dog.jpg", "--out", str(tmp_path / "file")),
               "--out", "not a folder")
    _one_error(host("--image", "dog.jpg", "--out", str(tmp_path / "file" / "sub")),
               "--out", "cannot create the folder")
    assert (tmp_path / "file").read_text() == "x"


def test_bundles_with_other_class_counts(tmp_path):
    """1 or 100 classes: named class0.. (or by --names), category_id class_id + 1."""
    for n in (1, 100):
        bundle = _tiny_bundle(tmp_path, f"c{n}", _classes(n))
        out = tmp_path / f"out{n}"
        r = host("--image", "dog.jpg", "--bundle", str(bundle), "--conf", "0.01",
                 "--out", str(out))
        assert r.returncode == 0, r.stderr
        dets = json.loads((out / "detections.json").read_text())
        assert dets and {d["class_name"] for d in dets} <= {f"class{i}" for i in range(n)}
        assert all(d["category_id"] == d["class_id"] + 1 for d in dets)
    names = tmp_path / "one.names"
    names.write_text("cat\n")
    r = host("--image", "dog.jpg", "--bundle", str(tmp_path / "c1.npz"), "--conf", "0.01",
             "--names", str(names), "--out", str(tmp_path / "named"))
    assert r.returncode == 0, r.stderr
    assert {d["class_name"] for d in json.loads((tmp_path / "named/detections.json")
                                                .read_text())} == {"cat"}
    names.write_text("cat\ndog\n")
    _one_error(host("--image", "dog.jpg", "--bundle", str(tmp_path / "c1.npz"),
                    "--names", str(names)), "one.names", "2 names", "1 class")


def test_sim_filters_the_heads_by_default(tmp_path):
    """On a device with memory the heads are filtered (as with --filter-heads) unless
    --no-filter-heads or --conf 0: the same detections either way. (On this small network
    the mask's requests cost about what the filter saves; dog.jpg on Tiny-YOLOv3 moves
    45% fewer bytes.)"""
    bundle = _tiny_bundle(tmp_path, "c2", _classes(2))
    frames, dets = {}, {}
    for name, extra in (("auto", ()), ("on", ("--filter-heads",)),
                        ("whole", ("--no-filter-heads",)), ("conf0", ("--conf", "0"))):
        out = tmp_path / name
        r = host("--image", "dog.jpg", "--bundle", str(bundle), "--backend", "sim",
                 "--out", str(out), "--quiet", *extra)
        assert r.returncode == 0, r.stderr
        frames[name] = json.loads((out / "layer_report.json").read_text())["frame"]
        dets[name] = json.loads((out / "detections.json").read_text())
    assert dets["auto"] == dets["on"] == dets["whole"] and dets["auto"]
    heads = {name: (f["heads_filtered"], f["head_link_bytes"]) for name, f in frames.items()}
    assert heads["auto"] == heads["on"] and len(heads["auto"][0]) == 2, heads   # both heads
    assert heads["whole"] == heads["conf0"] and heads["whole"][0] == [], heads
    assert heads["auto"][1] != heads["whole"][1], heads


# -- video and camera ----------------------------------------------------------------------
def _clip(path: Path, frames: list[str], size: tuple[int, int] = (320, 240)) -> Path:
    """An MP4 of sample images, one frame each, resized to `size`."""
    import cv2
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, size)
    for name in frames:
        out.write(cv2.resize(cv2.imread(str(ROOT / "assets" / name)), size))
    out.release()
    return path


def test_video_golden_writes_mp4_and_jsonl(tmp_path):
    import cv2
    frames = ["dog.jpg", "person.jpg", "dog.jpg", "horses.jpg"]
    clip = _clip(tmp_path / "clip.mp4", frames)
    out = tmp_path / "out"
    r = host("--video", str(clip), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "frames/s" in r.stdout and "frame 3 (0.60 s)" in r.stdout
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    got = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (240, 320, 3)
        got += 1
    assert got == len(frames)
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3]
    assert [x["timestamp"] for x in lines] == [0.0, 0.2, 0.4, 0.6]
    assert {d["class_name"] for d in lines[0]["detections"]} >= {"dog"}
    same = [{d["class_name"] for d in lines[i]["detections"]} for i in (0, 2)]
    assert same[0] == same[1]               # the same picture (up to the codec's losses)
    for d in lines[1]["detections"]:
        assert d["file_name"] == "clip.mp4"
        assert set(d) == {"file_name", "bbox", "score", "class_id", "class_name", "category_id"}
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "detections.jsonl"]
    r = host("--video", str(clip), "--max-frames", "2", "--out", str(tmp_path / "two"))
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "two" / "detections.jsonl").read_text().splitlines()) == 2


def test_video_and_camera_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    out = tmp_path / "out"
    _one_error(host("--video", str(tmp_path / "missing.mp4"), "--out", str(out)),
               "missing.mp4", "no such video")
    _one_error(host("--video", str(tmp_path / "notes.mp4"), "--out", str(out)),
               "notes.mp4", "OpenCV cannot open")
    _one_error(host("--camera", "57", "--out", str(out)), "camera 57", "cannot open")
    assert list(out.iterdir()) == []
    clip = _clip(tmp_path / "c.mp4", ["dog.jpg"])
    r = host("--video", str(clip), "--show", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    _one_error(r, "--show", "display")
    r = host("--image", "dog.jpg", "--show")
    assert r.returncode == 2 and "--show and --max-frames need --video or --camera" in r.stderr


def test_sim_backend_on_video_warns_with_its_time(tmp_path):
    """The simulated RTL is allowed on a video but says what a frame costs first (here the
    run stops at once: a clip of a stride-2 network the engine cannot run)."""
    bundle = _tiny_bundle(tmp_path, "stride2", lambda cfg: cfg.replace(
        "filters=8\nsize=3\nstride=1", "filters=8\nsize=3\nstride=2", 1).replace(
        "width=32\nheight=32", "width=64\nheight=64"))
    r = host("--video", str(_clip(tmp_path / "c.mp4", ["dog.jpg"])), "--bundle", str(bundle),
             "--backend", "sim")
    assert "warning: the simulated RTL takes about" in r.stderr and "s per frame" in r.stderr
    _one_error(r, "layer 0")
