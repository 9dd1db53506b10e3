# The two commands of the README: `make demo` and `make test` (both set everything up first).
PY := .venv/bin/python
COCO ?= ../shared/data/coco-train128

.PHONY: setup demo test lint bench eval synth study

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) sw/host.py --image dog.jpg --out out/demo

test: setup
	$(PY) -m pytest -q tests sim

lint: setup
	.venv/bin/ruff check .

bench: setup
	$(PY) bench/golden_frame.py
	$(PY) bench/engine_util.py
	$(PY) bench/sim_frame.py

eval: setup
	$(PY) -m sw.eval --images ../shared/data/coco-train128/images --ann ../shared/data/coco-train128/instances.json

synth: setup
	$(PY) -m hw.synth_report

# PTQ study (docs/study.md): bits x calibration method x adjustment style, about an hour.
study: setup
	OMP_NUM_THREADS=1 $(PY) -m sw.study --images $(COCO)/images --ann $(COCO)/instances.json \
		--calib-images 32 --bits 8,4,6,16,10,12 --out docs/study-results
