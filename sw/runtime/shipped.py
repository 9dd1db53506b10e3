"""The pretrained network and the shipped default bundle, fetched, verified and cached on
first use (below the device runtime: the simulator's profile-guided build uses them too)."""

from __future__ import annotations

from pathlib import Path

from hw.spec.config import Numerics
from sw.runtime import compact
from sw.runtime.darknet import ConvWeights, DarknetError, Network, load_cfg, read_weights
from sw.runtime.util import log, sha256_file
from sw.runtime.weights import cache_dir, default_cfg, fetch_weights

__all__ = ["load_network", "shipped_bundle"]


def load_network(cfg: str | Path | None = None, weights: str | Path | None = None,
                 ) -> tuple[Network, list[ConvWeights], dict]:
    """A parsed cfg, its Darknet weights and their provenance (file names and SHA-256s);
    default: the pretrained Tiny-YOLOv3, fetched and verified on first use."""
    cfg_path = Path(cfg) if cfg else default_cfg()
    net = load_cfg(cfg_path)
    if net.width != net.height:
        raise DarknetError(f"{cfg_path}: [net] is {net.width} wide and {net.height} high: only "
                           "square inputs are supported (set width = height)")
    weights_path = Path(weights) if weights else fetch_weights()
    params = read_weights(weights_path, net)
    prov = {"cfg": cfg_path.name, "cfg_sha256": sha256_file(cfg_path),
            "weights": weights_path.name, "weights_sha256": sha256_file(weights_path)}
    return net, params, prov


def shipped_bundle(numerics: Numerics) -> Path | None:
    """The shipped default bundle (`compact.DEFAULT`, calibrated and AdaRound-tuned on
    COCO images) rebuilt on the fetched pretrained weights and cached; None when it was
    quantized for other number formats than `numerics` (a HwConfig or Numerics)."""
    made = compact.read_manifest(compact.DEFAULT)["bundle"]
    if made["numerics_id"] != numerics.numerics_id_hex:
        return None
    path = cache_dir() / "bundles" / f"yolov3-tiny-default-{made['content_hash'][:16]}.npz"
    if not path.exists():
        log(f"rebuilding the default bundle from {compact.DEFAULT.name} on the pretrained "
            f"weights into {path}")
        compact.unpack(compact.DEFAULT, *load_network()).save(path)
    return path
