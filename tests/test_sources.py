"""Data sources that read files: CIFAR-10/100, STL-10 and image folders, from small files
written in the exact official formats, and the errors for missing or broken ones."""

import os
import pickle
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms.v2 import functional as F

from conftest import compose_config, write_image
from sslkit.data import InMemoryData, cifar10, cifar100, digits, imagefolder, stl10
from sslkit.data.imagefolder import decode
from sslkit.data.memory import fits
from sslkit.errors import ConfigError
from sslkit.train import train

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------------------- CIFAR


def write_cifar10(root: Path, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The six batch files of cifar-10-batches-py with n random images each; returns the
    train images as (5n, 32, 32, 3) and their labels."""
    root.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        hwc = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = RNG.integers(0, 10, n).tolist()
        # the official layout: 1024 red values row by row, then green, then blue
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": hwc.transpose(0, 3, 1, 2).reshape(n, 3072),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            images.append(hwc)
            labels += y
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return np.concatenate(images), np.array(labels)


def test_cifar10_reads_the_python_batches(tmp_path):
    hwc, labels = write_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the archive's folder or its parent
        data = cifar10(str(root), batch_size=4)
        assert data.x.dtype == torch.uint8 and data.x.shape == (30, 3, 32, 32)
        np.testing.assert_array_equal(data.x.permute(0, 2, 3, 1).numpy(), hwc)
        np.testing.assert_array_equal(data.y.numpy(), labels)
    test = cifar10(str(tmp_path), batch_size=2, split="test")
    assert test.x.shape == (6, 3, 32, 32)


def test_cifar100_reads_fine_labels(tmp_path):
    hwc = RNG.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    fine, coarse = [0, 99, 42, 7, 7], [0, 19, 3, 1, 1]
    for name in ("train", "test"):
        batch = {b"data": hwc.transpose(0, 3, 1, 2).reshape(5, 3072), b"fine_labels": fine,
                 b"coarse_labels": coarse, b"filenames": [b"x.png"] * 5}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=2))
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"] * 100}))
    data = cifar100(str(tmp_path), batch_size=5)
    np.testing.assert_array_equal(data.x.permute(0, 2, 3, 1).numpy(), hwc)
    assert data.y.tolist() == fine


def test_missing_root_and_files_say_what_is_expected(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root is not set.*data_batch_1.*cifar-10-python\.tar\.gz"):
        cifar10(None, batch_size=4)
    with pytest.raises(ConfigError, match=r"data\.root=.*nowhere is not a directory.*data_batch_1"):
        cifar10(str(tmp_path / "nowhere"), batch_size=4)
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"data\.root=.*data_batch_3 not found in .*Download"):
        cifar10(str(tmp_path), batch_size=4)


def test_truncated_or_foreign_cifar_files_are_named(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"data_batch_2 is not a valid data file: it is truncated"):
        cifar10(str(tmp_path), batch_size=4)
    path.write_bytes(pickle.dumps({b"pixels": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(ConfigError, match=r"data_batch_2 .*expected a dict with b'data' and b'labels'"):
        cifar10(str(tmp_path), batch_size=4)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ConfigError, match=r"data_batch_2 .*uint8 \(n, 3072\)"):
        cifar10(str(tmp_path), batch_size=4)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(ConfigError, match=r"data_batch_2 .*labels must lie in 0\.\.9"):
        cifar10(str(tmp_path), batch_size=4)

    class Payload:  # a pickle that would run code when loaded
        def __reduce__(self):
            return os.system, ("echo unsafe",)

    path.write_bytes(pickle.dumps({b"data": Payload(), b"labels": []}))
    with pytest.raises(ConfigError, match=r"data_batch_2 .*unexpected object posix\.system"):
        cifar10(str(tmp_path), batch_size=4)


# ---------------------------------------------------------------------------- STL-10


def write_stl_images(path: Path, chw: np.ndarray) -> None:
    """The official layout: each plane stored column by column."""
    path.write_bytes(np.ascontiguousarray(chw.transpose(0, 1, 3, 2)).tobytes())


def official_reader(path: Path) -> np.ndarray:
    """read_all_images of the STL-10 repository: (N, 96, 96, 3) images for plotting."""
    everything = np.fromfile(path, dtype=np.uint8)
    return np.transpose(np.reshape(everything, (-1, 3, 96, 96)), (0, 3, 2, 1))


@pytest.fixture
def stl_root(tmp_path):
    root = tmp_path / "stl10_binary"
    root.mkdir()
    for name, n in [("train", 4), ("test", 3), ("unlabeled", 5)]:
        write_stl_images(root / f"{name}_X.bin", RNG.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8))
        if name != "unlabeled":
            (root / f"{name}_y.bin").write_bytes(RNG.integers(1, 11, n, dtype=np.uint8).tobytes())
    return root


def test_stl10_matches_the_official_reader(stl_root):
    data = stl10(str(stl_root.parent), batch_size=2, split="train")
    np.testing.assert_array_equal(data.x.permute(0, 2, 3, 1).numpy(), official_reader(stl_root / "train_X.bin"))
    np.testing.assert_array_equal(data.y.numpy(), np.fromfile(stl_root / "train_y.bin", np.uint8) - 1)
    both = stl10(str(stl_root), batch_size=3, split="train+unlabeled")
    assert both.x.shape == (9, 3, 96, 96)
    assert torch.equal(both.x[:4], data.x)
    np.testing.assert_array_equal(both.x[4:].permute(0, 2, 3, 1).numpy(), official_reader(stl_root / "unlabeled_X.bin"))
    assert both.y[4:].tolist() == [-1] * 5
    assert stl10(str(stl_root), batch_size=3, split="test").x.shape == (3, 3, 96, 96)


def test_stl10_broken_files_are_named(stl_root):
    (stl_root / "train_X.bin").write_bytes((stl_root / "train_X.bin").read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"train_X\.bin is not a valid data file: its size.*27648"):
        stl10(str(stl_root), batch_size=2, split="train")
    (stl_root / "test_y.bin").write_bytes(b"\x01\x02")
    with pytest.raises(ConfigError, match=r"test_y\.bin .*2 labels for 3 images"):
        stl10(str(stl_root), batch_size=2, split="test")
    (stl_root / "unlabeled_X.bin").unlink()
    with pytest.raises(ConfigError, match=r"data\.root=.*unlabeled_X\.bin not found.*stl10_binary\.tar\.gz"):
        stl10(str(stl_root), batch_size=2, split="unlabeled")


# ----------------------------------------------------------------------- image folder


def reference_image(chw: torch.Tensor, size: int) -> torch.Tensor:
    return F.center_crop(F.resize(chw, [size], antialias=True), [size, size])


def test_imagefolder_decodes_png_and_jpeg_and_caches(tmp_path, monkeypatch):
    root, cache = tmp_path / "pets", tmp_path / "cache"
    originals = {}
    for cls, shape in [("dog", (3, 40, 60)), ("cat", (3, 50, 30)), ("owl", (1, 20, 20))]:
        (root / cls).mkdir(parents=True)
        img = torch.from_numpy(RNG.integers(0, 256, shape, dtype=np.uint8))
        write_image(img, root / cls / "a.png")
        originals[cls] = img if shape[0] == 3 else img.expand(3, -1, -1)
    write_image(torch.full((3, 16, 16), 200, dtype=torch.uint8), root / "cat" / "b.JPG")
    (root / "notes.txt").write_text("not an image")

    data = imagefolder(str(root), batch_size=2, image_size=24, cache_dir=str(cache))
    assert data.x.shape == (4, 3, 24, 24) and data.y.tolist() == [0, 0, 1, 2]  # cat, cat, dog, owl
    assert torch.equal(data.x[0], reference_image(originals["cat"], 24))
    assert torch.equal(data.x[2], reference_image(originals["dog"], 24))
    assert torch.equal(data.x[3], reference_image(originals["owl"], 24))
    assert (data.x[1].int() - 200).abs().max() <= 2  # a flat JPEG decodes to its level
    assert len(list(cache.glob("imagefolder-pets-24px-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(sys.modules["sslkit.data.imagefolder"], "load_image", no_decoding)
    again = imagefolder(str(root), batch_size=2, image_size=24, cache_dir=str(cache))
    assert torch.equal(again.x, data.x) and torch.equal(again.y, data.y)
    monkeypatch.undo()
    write_image(originals["dog"], root / "dog" / "c.png")  # a changed tree makes a new cache file
    assert len(imagefolder(str(root), batch_size=2, image_size=24, cache_dir=str(cache)).x) == 5
    assert len(list(cache.glob("*.pt"))) == 2


def torchvision_decode(path: Path) -> torch.Tensor:
    """The decoder data=imagefolder used before (torchvision.io, deprecated in torchvision
    0.29), with its warning silenced here alone: the reference the new decoder must match."""
    io = pytest.importorskip("torchvision.io")
    if not hasattr(io, "decode_image"):
        pytest.skip("torchvision no longer has its image decoder")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision",
                                DeprecationWarning)
        return io.decode_image(str(path), mode=io.ImageReadMode.RGB)


def test_pillow_decodes_the_pixels_torchvision_decoded(tmp_path):
    """PNG (RGB, gray, palette, alpha) and JPEG (4:4:4, 4:2:0, progressive, gray, CMYK):
    Pillow's pixels equal torchvision.io's exactly, every byte (both decode JPEG with
    libjpeg-turbo's default integer IDCT and smooth chroma upsampling); a PNG is also its
    own array back (lossless)."""
    yy, xx = np.mgrid[0:37, 0:53]
    smooth = np.stack([(xx * 5) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1)
    rgb = np.clip(smooth + RNG.integers(-40, 40, smooth.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    files = {"rgb.png": image, "gray.png": image.convert("L"), "palette.png": image.convert("P", palette=1),
             "alpha.png": image.convert("RGBA"), "q90.jpg": image, "q50-420.jpg": image, "progressive.jpg": image,
             "gray.jpg": image.convert("L"), "cmyk.jpg": image.convert("CMYK")}
    options = {"q90.jpg": {"quality": 90, "subsampling": 0}, "q50-420.jpg": {"quality": 50, "subsampling": 2},
               "progressive.jpg": {"progressive": True}}
    for name, img in files.items():
        img.save(tmp_path / name, **options.get(name, {}))
        ours = decode(tmp_path / name)
        assert ours.dtype == torch.uint8 and ours.shape == (3, 37, 53), name
        assert torch.equal(ours, torchvision_decode(tmp_path / name)), name
        if name.endswith(".png"):
            expected = np.array(img.convert("RGB"))
            assert torch.equal(ours, torch.from_numpy(expected).permute(2, 0, 1)), name
    assert torch.equal(decode(tmp_path / "rgb.png"), torch.from_numpy(rgb).permute(2, 0, 1))


def test_a_16_bit_png_decodes_to_its_high_byte(tmp_path):
    """v·257 stored in 16 bits is v in 8 (libpng's strip_16); torchvision.io returned the
    16-bit values, which the uint8 cache wrapped to their low byte, and Pillow's own
    conversion clips them to 255."""
    v = torch.from_numpy(RNG.integers(0, 256, (9, 11), dtype=np.uint16))
    Image.fromarray((v * 257).numpy()).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert torch.equal(decode(tmp_path / "deep.png"), v.to(torch.uint8).expand(3, -1, -1))


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.root is not set.*<class>/<image>"):
        imagefolder(None, batch_size=2)
    (tmp_path / "flat.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"data\.root=.* holds no images in class folders.*directly in data\.root"):
        imagefolder(str(tmp_path), batch_size=2, cache_dir=str(tmp_path / "c"))
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ConfigError, match=r"broken\.png cannot be decoded as an image"):
        imagefolder(str(tmp_path), batch_size=1, cache_dir=str(tmp_path / "c"))


def test_scikit_image_photographs_through_imagefolder(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    src = Path(skimage_data.__file__).parent
    photos = {"animals": ["chelsea.png", "horse.png", "coffee.png"], "space": ["astronaut.png", "rocket.jpg",
                                                                              "hubble_deep_field.jpg"]}
    for cls, names in photos.items():
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(src / name, tmp_path / "photos" / cls / name)
    data = imagefolder(str(tmp_path / "photos"), batch_size=2, image_size=64, cache_dir=str(tmp_path / "c"))
    assert data.x.shape == (6, 3, 64, 64) and data.y.tolist() == [0, 0, 0, 1, 1, 1]
    for i, (cls, name) in enumerate((c, n) for c in photos for n in sorted(photos[c])):
        # an independent decoder: scikit-image's imread (imageio / Pillow)
        from skimage.io import imread

        arr = imread(src / name)
        arr = np.repeat(arr[..., None], 3, -1) if arr.ndim == 2 else arr[..., :3]
        ref = reference_image(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1), 64)
        err = (data.x[i].int() - ref.int()).abs()
        if name.endswith(".png"):
            assert err.max() == 0, name
        else:  # JPEG decoders may differ in the last bit of the IDCT
            assert err.float().mean() < 1 and err.max() <= 8, name


# ------------------------------------------------------------------ on_device and e2e


def test_on_device_false_keeps_the_set_in_host_memory_and_moves_batches():
    data = InMemoryData(torch.arange(20).reshape(10, 2), torch.arange(10), 4, on_device=False)
    moved = data.to(torch.device("meta"))
    assert moved.x.device.type == "cpu" and moved.device == torch.device("meta")
    _, x, y = next(moved.batches(seed=0))
    assert x.device.type == "meta" and y.device.type == "meta" and x.shape == (4, 2)
    kept = InMemoryData(torch.zeros(10, 2), torch.zeros(10), 4).to(torch.device("cpu"))
    _, x, _ = next(kept.batches(seed=0))
    assert x.device.type == "cpu" and fits(10**12, torch.device("cpu"))


def test_on_device_rejects_other_values():
    with pytest.raises(ConfigError, match=r"data\.on_device=maybe .*auto, true or false"):
        InMemoryData(torch.zeros(4, 2), torch.zeros(4), 2, on_device="maybe")


def test_sources_compose_from_the_config_groups(tmp_path):
    write_cifar10(tmp_path)
    cfg = compose_config("data=cifar10", f"data.root={tmp_path}", "data.split=test", "data.batch_size=3",
                         "data.on_device=false")
    data = instantiate(cfg.data)
    assert data.x.shape == (6, 3, 32, 32) and data.batch_size == 3 and data.on_device is False
    for option in ("cifar100", "stl10", "imagefolder"):
        with pytest.raises(Exception) as info:
            instantiate(compose_config(f"data={option}").data)
        cause = info.value
        while not isinstance(cause, ConfigError) and cause.__cause__ is not None:
            cause = cause.__cause__
        assert isinstance(cause, ConfigError) and "data.root is not set" in str(cause)


def test_cifar10_barlow_twins_trains_end_to_end(config, tmp_path):
    write_cifar10(tmp_path / "cifar", n=8)
    cfg = config("data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.batch_size=16", "augment=barlow_twins",
                 "backbone=mlp", "projector=mlp", "loss=barlow_twins", "trainer.max_steps=3", "spectrum=off")
    record = train(cfg, tmp_path / "run")
    assert record["step"] == 2 and np.isfinite(record["loss"])


def test_cifar10_experiment_preset_trains(config, tmp_path):
    write_cifar10(tmp_path / "cifar", n=8)
    cfg = config("experiment=barlow_cifar10_resnet18", f"data.root={tmp_path / 'cifar'}", "data.batch_size=16",
                 "trainer.max_steps=3", "device=cpu")
    record = train(cfg, tmp_path / "run")
    assert record["step"] == 2 and np.isfinite(record["loss"])
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_cifar10_experiment_preset_trains_from_the_shell(tmp_path):
    write_cifar10(tmp_path / "cifar", n=8)
    done = subprocess.run([Path(sys.executable).parent / "sslkit-train", "experiment=barlow_cifar10_resnet18",
                           f"data.root={tmp_path / 'cifar'}", "data.batch_size=16", "trainer.max_steps=3",
                           "trainer.progress=false", "trainer.report=false", "device=cpu",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


def test_sslkit_data_is_the_default_root_of_the_archives(tmp_path, monkeypatch):
    """One folder holding the extracted archives, named once in $SSLKIT_DATA, serves the
    cifar10 option with no data.root; unset, the error says both ways to give it."""
    write_cifar10(tmp_path / "cifar-10-batches-py", n=2)
    monkeypatch.setenv("SSLKIT_DATA", str(tmp_path))
    cfg = compose_config("data=cifar10", "data.batch_size=2")
    assert cfg.data.root == str(tmp_path) and instantiate(cfg.data).x.shape == (10, 3, 32, 32)
    monkeypatch.delenv("SSLKIT_DATA")
    assert compose_config("data=stl10").data.root is None
    with pytest.raises(ConfigError, match=r"data.root is not set: data=cifar10 .* Set data.root=DIR with .*, or "
                                          r"once per machine: export SSLKIT_DATA=DIR"):
        cifar10(None, batch_size=2)


def test_digits_resized_to_rgb_images_match_torchvision():
    """data=digits with size=32, channels=3: torchvision's bilinear resize of each 8×8
    image (upsampling, so no antialiasing), rounded to uint8, in all three channels."""
    big = instantiate(compose_config("data.size=32", "data.channels=3").data)
    assert big.x.shape == (1797, 3, 32, 32) and big.x.dtype == torch.uint8
    exact = torch.from_numpy(load_digits().images * (255 / 16)).float().unsqueeze(1)
    ref = F.resize(exact, [32, 32], interpolation=F.InterpolationMode.BILINEAR, antialias=False).round()
    assert torch.equal(big.x[:, :1].float(), ref)
    assert torch.equal(big.x[:, 0], big.x[:, 1]) and torch.equal(big.x[:, 0], big.x[:, 2])
    with pytest.raises(ConfigError, match=r"data.size=4, data.channels=1 is not allowed"):
        digits(256, size=4)
