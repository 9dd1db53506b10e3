# The two commands of the README: `make demo` and `make test` (both set everything up first).
PY := .venv/bin/python

.PHONY: setup demo test lint bench eval synth

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
