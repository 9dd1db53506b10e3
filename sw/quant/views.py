"""Views of an image: more test and tuning inputs from one photo (mirror, seeded crops).

AdaRound and QAT tune on views of their images (`sw.quant.compact make --views`), and
`sw.eval.fidelity` scores bundles on views of held-out images.
"""

from __future__ import annotations

import numpy as np

__all__ = ["views"]


def views(img: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """n views of an HxWx3 uint8 image: itself, its mirror, then random mirrored-or-not crops
    of 25-100 % of the area with the aspect ratio scaled by 3/4 to 4/3."""
    h, w = img.shape[:2]
    out = [img, np.ascontiguousarray(img[:, ::-1])][:n]
    while len(out) < n:
        area = rng.uniform(0.25, 1.0) * h * w
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * w / h
        cw = int(min(w, max(8, round(np.sqrt(area * ratio)))))
        ch = int(min(h, max(8, round(np.sqrt(area / ratio)))))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img[y:y + ch, x:x + cw]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out
