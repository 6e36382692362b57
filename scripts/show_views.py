"""Draw a batch of views: scikit-image's bundled photographs, read through data=imagefolder
and augmented by an augment preset, to scripts/figures/views.png (shown in the README).

    python scripts/show_views.py [augment preset, default barlow_twins] [image size, default 96]

Each row is one photograph: the image as loaded, then view 1 and view 2 of three draws.
Runs offline: the photographs ship with scikit-image (the `dev` extra).
"""

import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import skimage.data
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sslkit.cli import CONFIG_DIR
from sslkit.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "motorcycle_left.png"]
DRAWS = 3


def main(preset: str = "barlow_twins", size: int = 96) -> Path:
    register_configs()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "photos" / "all").mkdir(parents=True)
        for name in PHOTOS:
            shutil.copy(Path(skimage.data.__file__).parent / name, Path(tmp) / "photos" / "all" / name)
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["data=imagefolder", f"data.root={tmp}/photos", f"data.image_size={size}",
                                              f"data.cache_dir={tmp}/cache", f"data.batch_size={len(PHOTOS)}",
                                              f"augment={preset}"])
        data, aug = instantiate(cfg.data), instantiate(cfg.augment)
    g = torch.Generator().manual_seed(0)
    draws = [aug(data.x, g) for _ in range(DRAWS)]
    mean, std = aug.mean.reshape(1, -1, 1, 1), aug.std.reshape(1, -1, 1, 1)

    def show(ax, img: torch.Tensor, title: str) -> None:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    n = len(data.x)
    fig, axes = plt.subplots(n, 1 + 2 * DRAWS, figsize=(1.4 * (1 + 2 * DRAWS), 1.5 * n))
    for i in range(n):
        show(axes[i, 0], data.x[i].float() / 255, "image" if i == 0 else "")
        for d, (v1, v2) in enumerate(draws):
            for k, v in enumerate((v1, v2)):
                show(axes[i, 1 + 2 * d + k], (v[i : i + 1] * std + mean)[0], f"view {k + 1}" if i == 0 else "")
    fig.suptitle(f"augment={preset}: two views per draw, {DRAWS} draws (data=imagefolder, {size} px)", fontsize=9)
    fig.tight_layout()
    out = ROOT / "scripts" / "figures" / "views.png"
    fig.savefig(out, dpi=110)
    print(out)
    return out


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["barlow_twins"]), *(int(a) for a in sys.argv[2:3]))
