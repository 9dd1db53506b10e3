"""Layer engine schedule on Tiny-YOLOv3: groups, cycles and MAC utilization per conv layer.

    python bench/engine_util.py [--config HWCONFIG.json] [--cfg yolov3-tiny.cfg] [--single]

Cycles come from `hw.spec.engine.engine_cycles`, the documented schedule of one pass (one
output-channel group) without stalls; sim/test_engine.py (`engine_slice`) checks it
against the Verilator simulation of Tiny-YOLOv3-shaped groups on the default config
(layers 12, 13, 10 with its stride-1 pool, and 0 on a 32x32 map): measured within 25
cycles of the model (docs/engine.md has the table). A layer runs ceil(cout / group) passes, each
re-streaming the whole input map; the table also lists the bytes each layer puts on the
link (parameters + input map per group + outputs). The input goes as the memory device's
pass reader sends a dense map (two values a transfer: row 0 of a 3x3 map fills at two a
cycle, `Pass.input_pairs`); ``--single``: one value a transfer, as the streaming device's
link sends it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hw.spec.config import load_config  # noqa: E402
from hw.spec.engine import POOL_NONE, POOL_S1, POOL_S2, engine_cycles, group_size, param_bytes  # noqa: E402
from sw.runtime.darknet import Conv, MaxPool, load_cfg  # noqa: E402
from sw.runtime.weights import default_cfg  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="HwConfig JSON (default: the default build)")
    ap.add_argument("--cfg", default=str(default_cfg()), help="Darknet cfg")
    ap.add_argument("--single", action="store_true",
                    help="one input value a transfer (the streaming device)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    net = load_cfg(args.cfg)
    r, c = cfg.array_rows, cfg.array_cols
    print(f"HwConfig {cfg.config_id_hex}: {r}x{c} array, weight memory "
          f"{cfg.weight_mem_bytes} B, {cfg.clock_hz / 1e6:g} MHz")
    print(f"{'layer':>5} {'map':>9} {'cin':>5} {'cout':>5} {'k':>2} {'pool':>4} {'group':>5} "
          f"{'groups':>6} {'MMAC':>7} {'Mcycles':>8} {'util':>6} {'link MB':>8}")
    tot_mac = tot_cyc = tot_link = 0
    util3 = []
    for i in net.conv_indices:
        conv = net.layers[i]
        assert isinstance(conv, Conv) and conv.stride == 1
        h, w, cin = net.in_shape(i)
        cout, k = net.shapes[i][2], conv.size
        nxt = net.layers[i + 1] if i + 1 < len(net.layers) else None
        pool, mode = "-", POOL_NONE
        oh, ow = h, w
        if isinstance(nxt, MaxPool):
            pool, mode = f"s{nxt.stride}", POOL_S2 if nxt.stride == 2 else POOL_S1
            if nxt.stride == 2:
                oh, ow = h // 2, w // 2
        g = group_size(cfg, k, cin)
        if g == 0:
            print(f"{i:>5} does not fit: {k}x{k}x{cin} needs more weight memory")
            continue
        groups = math.ceil(cout / g)
        sizes = [min(g, cout - n * g) for n in range(groups)]
        pairs = not args.single and cfg.param_beat >= 2
        cyc = sum(engine_cycles(cfg, h, w, cin, s, k, mode, pairs) for s in sizes)
        macs = h * w * k * k * cin * cout
        link = (sum(param_bytes(cfg, k, cin, s) for s in sizes) + groups * h * w * cin
                + oh * ow * cout * (2 if conv.activation == "linear" else 1))
        util = macs / (cyc * cfg.macs_per_cycle)
        if k == 3:
            util3.append((i, util))
        tot_mac, tot_cyc, tot_link = tot_mac + macs, tot_cyc + cyc, tot_link + link
        print(f"{i:>5} {f'{h}x{w}':>9} {cin:>5} {cout:>5} {k:>2} {pool:>4} {g:>5} {groups:>6} "
              f"{macs / 1e6:>7.1f} {cyc / 1e6:>8.3f} {util:>6.1%} {link / 1e6:>8.2f}")
    print(f"{'all':>5} {'':>9} {'':>5} {'':>5} {'':>2} {'':>4} {'':>5} {'':>6} "
          f"{tot_mac / 1e6:>7.1f} {tot_cyc / 1e6:>8.3f} "
          f"{tot_mac / (tot_cyc * cfg.macs_per_cycle):>6.1%} {tot_link / 1e6:>8.2f}")
    print(f"array time per frame: {tot_cyc / cfg.clock_hz:.3f} s at {cfg.clock_hz / 1e6:g} MHz; "
          f"link bytes per frame {tot_link / 1e6:.2f} MB "
          f"({tot_link * 10 / cfg.uart_baud:.1f} s at {cfg.uart_baud / 1e6:g} Mbaud, 8N1)")
    low = [f"{i} ({u:.0%})" for i, u in util3 if u < 0.8]
    print("3x3 layers below 80% utilization: " + (", ".join(low) if low else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
