"""The contract between the gateware and the host: what both sides must agree on.

`config` (HwConfig, Numerics and their ids), `intmath` (the integer arithmetic),
`protocol` (frames, opcodes, payload formats), `engine` (the layer engine's pass,
parameter layout, group sizes and cycle model) and `dram` (the DRAM controllers' CSR
layouts the host's read leveling uses). Plain Python and NumPy: these modules
import neither Amaranth nor torch nor anything of ours outside `hw.spec`, so the host
runtime (`sw.runtime`) reads them without the gateware (docs/architecture.md).
"""
