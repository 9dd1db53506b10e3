"""Host software: Darknet import, quantization, golden model, post-processing, driver."""
