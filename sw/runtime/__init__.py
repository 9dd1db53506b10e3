"""Running a quantized network: bundles, the golden integer model, the device driver and
its links, the network schedule, post-processing and the default bundle. Imports the
contract (`hw.spec`) and NumPy/Pillow, never torch or Amaranth."""
