"""Making quantized networks: the PyTorch float and fake-quant models, calibration,
power-of-two PTQ and its tuning, AdaRound, QAT and compact bundles. Sits on `sw.runtime`."""
