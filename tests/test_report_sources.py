"""Where each sample of an explained store came from: its file (`path`), the class names
with the labels (`class_names`), and a small RGB picture of the input (`inputs`), all
written by `lrpfn.datasets.explain` for `lrpfn report`.

The expected pictures are derived independently of `lrpfn.datasets._thumbnails`: from the
PNG files' own bytes (Pillow), from scikit-learn's digit grey levels, or by averaging
blocks of pixels in NumPy.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from lrpfn import composites, datasets
from lrpfn.cli import main
from lrpfn.datasets import StoreMismatchError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _image_folder(root: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    paths = []
    for name, count in (("cats", 3), ("dogs", 2)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            path = root / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n this file was cut short")
    return paths  # in ImageFolder's order: cats/0..2, dogs/0..1


def test_image_folder_store_keeps_paths_class_names_and_the_pixels(tmp_path):
    paths = _image_folder(tmp_path / "images")
    out = tmp_path / "images.zarr"
    arguments = ["--model", f"{HERE / 'tiny_models.py'}:tiny_cnn", "--rules", "epsilon"]
    arguments += ["--data", str(tmp_path / "images"), "--out", str(out), "--batch-size", "2"]
    # normalised inputs (x - 0.5) / 0.25: the store must undo this to show the pixels
    assert main(["explain-dataset", *arguments, "--mean", "0.5", "--std", "0.25", "--quiet"]) == 0
    group = zarr.open_group(str(out), mode="r")
    assert group["path"][:].tolist() == [str(p) for p in paths]  # the unreadable one too
    assert group.attrs["lrpfn"]["class_names"] == ["cats", "dogs"]
    assert group["inputs"].shape == (5, 12, 12, 3) and group["inputs"].dtype == np.uint8
    for row in (0, 2, 3, 4):
        assert np.array_equal(group["inputs"][row], np.asarray(Image.open(paths[row])))
    assert not group["inputs"][1].any()  # the unreadable file: no picture
    assert group.attrs["lrpfn"]["settings"]["normalization"] == [[0.5] * 3, [0.25] * 3]


def test_digits_store_has_no_files_but_names_and_grey_pictures(tmp_path):
    subset = torch.utils.data.Subset(datasets.Digits(), range(40))
    out = tmp_path / "digits.zarr"
    datasets.explain(
        datasets.digits_cnn(),
        subset,
        composites.epsilon_plus(),
        out,
        batch_size=16,
        normalization=((0.0,), (1.0,)),
        progress=False,
    )
    group = zarr.open_group(str(out), mode="r")
    assert group["path"][:].tolist() == [""] * 40
    assert group.attrs["lrpfn"]["class_names"] == [str(d) for d in range(10)]
    from sklearn.datasets import load_digits

    levels = load_digits().images[:40]  # grey levels 0..16, scaled to [0, 1] by Digits
    grey = np.round(levels / 16.0 * 255.0).astype(np.uint8)
    assert np.array_equal(group["inputs"][:], np.repeat(grey[..., None], 3, axis=-1))


class _Pictures(torch.utils.data.Dataset):
    """Ten random 3x40x20 inputs in [-3, 5]; no files, no class names."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.rand((10, 3, 40, 20), generator=generator) * 8 - 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], index % 2


def _linear_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 40 * 20, 2)).eval()


def test_large_inputs_shrink_by_area_and_scale_from_their_own_range(tmp_path):
    data = _Pictures()
    out = tmp_path / "p.zarr"
    datasets.explain(
        _linear_model(),
        data,
        composites.epsilon_plus(),
        out,
        batch_size=4,
        thumbnail=10,
        progress=False,
    )
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["lrpfn"]["class_names"] is None
    x = data.x.double().numpy()
    low = x.min(axis=(1, 2, 3), keepdims=True)
    scaled = (x - low) / (x.max(axis=(1, 2, 3), keepdims=True) - low)
    blocks = scaled.reshape(10, 3, 10, 4, 5, 4).mean(axis=(3, 5))  # 40x20 -> 10x5
    expected = np.round(blocks * 255.0).transpose(0, 2, 3, 1)
    assert group["inputs"].shape == (10, 10, 5, 3)
    assert np.abs(group["inputs"][:].astype(int) - expected).max() <= 1  # rounding at .5


def test_no_pictures_for_inputs_that_are_no_images_or_when_switched_off(tmp_path):
    flat = torch.utils.data.TensorDataset(torch.rand(6, 5), torch.zeros(6, dtype=torch.int64))
    model = torch.nn.Sequential(torch.nn.Linear(5, 3)).eval()
    datasets.explain(model, flat, composites.epsilon_plus(), tmp_path / "f.zarr", progress=False)
    assert "inputs" not in zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    datasets.explain(
        _linear_model(),
        _Pictures(),
        composites.epsilon_plus(),
        tmp_path / "o.zarr",
        thumbnail=0,
        progress=False,
    )
    assert "inputs" not in zarr.open_group(str(tmp_path / "o.zarr"), mode="r")


def test_resuming_with_other_pictures_is_refused(tmp_path):
    out = tmp_path / "p.zarr"
    rules = composites.epsilon_plus()
    datasets.explain(_linear_model(), _Pictures(), rules, out, thumbnail=10, progress=False)
    with pytest.raises(StoreMismatchError, match=r"(?s)  thumbnail: store has \[10, 5\]"):
        datasets.explain(_linear_model(), _Pictures(), rules, out, thumbnail=20, progress=False)
