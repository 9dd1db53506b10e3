"""Host software, layered (docs/architecture.md): `sw.runtime` runs bundles (golden model,
device driver, post-processing; NumPy only), `sw.quant` makes them (float model, PTQ,
tuning, AdaRound, QAT, compact bundles; torch), `sw.eval` measures them; `sw/host.py` is
the detection CLI on top."""
