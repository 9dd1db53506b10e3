"""Measuring quantized networks: mAP and fidelity with bootstrap intervals, fidelity on
views, the PTQ study. Sits on `sw.quant` and `sw.runtime`."""
