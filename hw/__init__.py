"""Gateware for the Tiny-YOLOv3 int8 accelerator (Amaranth 0.5) and its hardware config."""
