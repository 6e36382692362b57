"""Any directory of images sorted into one folder per class, root/<class>/<image>.

Images (.jpg, .jpeg, .png, any case) are decoded with Pillow as 8-bit RGB (`decode`),
resized so that the shorter side is `image_size` (antialiased bilinear) and centre-cropped
to image_size × image_size, once. The result is cached as a tensor file,
<cache_dir>/imagefolder-<root name>-<image_size>px-<key>.pt, where the key hashes the
resolved root, the size and every image's path, byte size and modification time: a
changed tree makes a new cache file. cache_dir defaults to $XDG_CACHE_HOME/sslkit
(~/.cache/sslkit).
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sslkit.data.files import root_dir
from sslkit.data.memory import InMemoryData
from sslkit.errors import ConfigError

EXTENSIONS = {".jpg", ".jpeg", ".png"}
LAYOUT = "DIR/<class>/<image>.{jpg,jpeg,png}, one folder per class"
HINT = "Point data.root at the folder that holds the class folders (e.g. data.root=~/data/flowers/train)."


def _find_images(root: str | None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted) and (image path, class index) pairs (sorted per class)."""
    path = root_dir(root, "imagefolder", LAYOUT, HINT)
    folders = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    per_class = [sorted(f for f in d.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file()) for d in folders]
    found = [(d.name, files) for d, files in zip(folders, per_class) if files]
    if not found:
        raise ConfigError(f"data.root={root} holds no images in class folders. data=imagefolder expects "
                          f"{LAYOUT}; images directly in data.root are not read. {HINT}")
    return [n for n, _ in found], [(f, c) for c, (_, files) in enumerate(found) for f in files]


def _cache_file(root: str, image_size: int, images: list[tuple[Path, int]], cache_dir: str | None) -> Path:
    key = hashlib.sha256(f"{Path(root).expanduser().resolve()}\n{image_size}\n".encode())
    for f, c in images:
        st = f.stat()
        key.update(f"{f}\t{c}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    base = Path(cache_dir).expanduser() if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "sslkit"
    return base / f"imagefolder-{Path(root).name}-{image_size}px-{key.hexdigest()[:16]}.pt"


def decode(path: Path) -> torch.Tensor:
    """uint8 (3, H, W): the file's pixels as 8-bit RGB, decoded by Pillow (libjpeg-turbo and
    zlib, as torchvision.io's decoder was: the same pixels). Grayscale is repeated over the
    channels, a palette expanded, alpha dropped (not composited), and 16-bit samples keep
    their high byte (v >> 8, as libpng's png_set_strip_16). EXIF orientation is not applied."""
    with Image.open(path) as img:
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: Pillow's convert would clip to 255
            img = Image.fromarray((np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8))
        return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """uint8 (3, image_size, image_size): decoded as RGB, shorter side resized to
    image_size, centre-cropped."""
    from torchvision.transforms.v2 import functional as TF  # here: importing torchvision takes ≈ 1 s

    try:
        img = decode(path)
    except Exception as exc:  # Pillow raises OSError (UnidentifiedImageError, truncated file) or others
        raise ConfigError(f"{path} cannot be decoded as an image ({exc}). Remove or replace it; "
                          f"data=imagefolder reads {LAYOUT}.") from exc
    img = TF.resize(img, [image_size], antialias=True)
    return TF.center_crop(img, [image_size, image_size])


def imagefolder(root: str | None, batch_size: int, image_size: int = 96, cache_dir: str | None = None,
                on_device: bool | str = "auto") -> InMemoryData:
    """Every image under root/<class>/ as uint8 (N, 3, image_size, image_size), labelled
    by its class folder's index in sorted order; decoded once, then read from the cache.

    Args:
        root: The folder that holds one folder of images per class.
        batch_size: Images per training step.
        image_size: Side in pixels of the square each image is resized and centre-cropped to.
        cache_dir: Folder of the decoded-images cache (null: $XDG_CACHE_HOME/sslkit, ~/.cache/sslkit).
        on_device: Hold the whole set on the training device (auto: when it takes at most half of the free GPU memory).
    """
    if image_size < 1:
        raise ConfigError(f"data.image_size={image_size} is not allowed: use a positive size in pixels.")
    classes, images = _find_images(root)
    cache = _cache_file(root, image_size, images, cache_dir)
    name = f"data=imagefolder ({root}, {len(classes)} classes)"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return InMemoryData(saved["x"], saved["y"], batch_size, name=name, on_device=on_device)
    x = torch.empty(len(images), 3, image_size, image_size, dtype=torch.uint8)
    for i, (f, _) in enumerate(tqdm(images, desc=f"data=imagefolder: decoding {root}", unit="image")):
        x[i] = load_image(f, image_size)
    y = torch.tensor([c for _, c in images], dtype=torch.long)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"x": x, "y": y, "classes": classes}, partial)
    os.replace(partial, cache)  # atomic: a crash never leaves a half-written cache
    return InMemoryData(x, y, batch_size, name=name, on_device=on_device)
