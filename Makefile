# The two commands of the README: `make demo` and `make test` (both set everything up first).
PY := .venv/bin/python
COCO ?= ../shared/data/coco-train128

.PHONY: setup demo test lint bench eval fidelity sensitivity synth study default-bundle

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) sw/host.py --image dog.jpg --out out/demo

# Tests run on TEST_JOBS pytest-xdist workers (the development machines have 2 cores);
# simulator builds are shared between workers under a lock. TEST_JOBS=0 runs them serially.
TEST_JOBS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist worksteal tests sim

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/golden_frame.py
	$(PY) bench/engine_util.py
	$(PY) bench/sim_frame.py
	for b in arty_a7 arty_a7_100 orangecrab_85f ulx3s_85f; do $(PY) -m bench.fps --board $$b --json; done
	$(PY) bench/link_fuzz.py

# Float vs the default bundle (calibrated on the first 64 images) vs PTQ variants calibrated
# on assets/, on the held-out last 64 images of coco-train128, with bootstrap intervals.
eval: setup
	$(PY) -m sw.eval --images $(COCO)/images --ann $(COCO)/instances.json --skip 64 \
		--bundle default --variants channel-mse-bc,channel-max,tensor-max --bootstrap 200

# Label-free fidelity of the default bundle against the assets/-calibrated PTQ on 8 views
# (image, mirror, 6 seeded crops) of each held-out image, cluster-bootstrap intervals.
fidelity: setup
	OMP_NUM_THREADS=1 $(PY) -m sw.eval.fidelity --images $(COCO)/images --skip 64 --views 8 \
		--variants channel-mse-bc --bundle default --bootstrap 200

# Per-layer sensitivity of the default bundle (docs/sensitivity.md): each conv layer (and the
# input) quantized alone and left float alone, 2 views of each held-out image, ~30 min.
sensitivity: setup
	OMP_NUM_THREADS=1 $(PY) -m sw.eval.sensitivity --images $(COCO)/images --skip 64 --limit 64 \
		--views 2 --bootstrap 200 --out docs/sensitivity

# Rebuild the shipped default bundle (sw/runtime/data/yolov3-tiny-default.npz, a compact file):
# eq0.5-fill PTQ on the first 64 coco-train128 images + AdaRound on 4 views of each, ~8 min.
default-bundle: setup
	OMP_NUM_THREADS=1 $(PY) -m sw.quant.compact make --images $(COCO)/images --first 64

synth: setup
	$(PY) -m hw.synth_report

# PTQ study (docs/study.md): bits x calibration method x adjustment style, about an hour.
study: setup
	OMP_NUM_THREADS=1 $(PY) -m sw.eval.study --images $(COCO)/images --ann $(COCO)/instances.json \
		--calib-images 32 --bits 8,4,6,16,10,12 --out docs/study-results
