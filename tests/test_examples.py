"""Every example runs (in its `--smoke` mode) and writes its files, and the documentation
builds with `mkdocs build --strict`: none of them can rot unnoticed."""

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(script: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _is_png(path: Path) -> bool:
    with Image.open(path) as picture:
        return picture.format == "PNG" and picture.size[0] > 0


def test_demo(tmp_path):
    result = _run("demo.py", "--smoke", "--out", "figure/demo.png", cwd=tmp_path)
    assert _is_png(tmp_path / "figure" / "demo.png")
    printed = result.stdout
    assert "test accuracy:" in printed
    for method in ("gradient x input", "alpha2beta1", "PatternAttribution (pos)", "epsilon_plus"):
        assert method in printed
    assert str(tmp_path / "figure" / "demo.png") in printed


def test_explain_mnist_on_digits(tmp_path):
    _run("explain_mnist.py", "--smoke", cwd=tmp_path)
    assert _is_png(tmp_path / "out" / "mnist_explanations.png")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of MNIST: zero bytes, a type code (8: uint8), the number of
    dimensions, each dimension as big-endian uint32, then the data."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def test_explain_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    result = _run(
        "explain_mnist.py", "--smoke", "--data-dir", "data", "--out", "m.png", cwd=tmp_path
    )
    assert "40 training images, 10 test images, 28x28" in result.stdout
    assert _is_png(tmp_path / "m.png")


def test_compose_rules(tmp_path):
    result = _run("compose_rules.py", "--smoke", cwd=tmp_path)
    assert _is_png(tmp_path / "out" / "compose_rules.png")
    assert "without it:" in result.stdout and "Asinh" in result.stdout


def test_intermediate_relevances(tmp_path):
    result = _run("intermediate_relevances.py", "--smoke", "--out", "trace", cwd=tmp_path)
    saved = np.load(tmp_path / "trace" / "relevances.npz")
    assert saved["input_1"].shape == (4, 1, 8, 8) and saved["output"].shape == (4, 10)
    assert _is_png(tmp_path / "trace" / "intermediate_relevances.png")
    assert "output" in result.stdout


def test_spray_digits(tmp_path):
    result = _run("spray_digits.py", "--smoke", "--out", "spray", cwd=tmp_path)
    assert _is_png(tmp_path / "spray" / "embedding.png")
    assert _is_png(tmp_path / "spray" / "cluster_means.png")
    assert (tmp_path / "spray" / "digits.zarr" / "relevance").is_dir()
    assert "SpRAy of the class 3: 183 heatmaps" in result.stdout
    assert "cluster 1:" in result.stdout


def _imagenet_folder(root: Path) -> None:
    rng = np.random.default_rng(1)
    for synset, size in (("n01440764", (50, 60)), ("n01443537", (64, 48))):
        folder = root / "val" / synset
        folder.mkdir(parents=True)
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{synset}_0.JPEG")


def test_report_digits(tmp_path):
    _run("report_digits.py", "--smoke", "--out", "r", cwd=tmp_path)
    report = json.loads((tmp_path / "r" / "report" / "data" / "report.json").read_text())
    assert [section["class"] for section in report["spray"]] == [3]
    assert len(report["samples"]) == 1797 and report["samples"][0]["label_name"] == "digit 0"
    assert [layer["name"] for layer in report["atlas"]["layers"]] == ["_0", "_3"]
    assert report["atlas"]["linked"] and report["atlas"]["layers"][1]["references"]


@pytest.mark.slow
def test_explain_vgg_reads_config_ini(tmp_path):
    _imagenet_folder(tmp_path / "imagenet")
    (tmp_path / "config.ini").write_text(f"[DEFAULT]\nImageNetDir = {tmp_path / 'imagenet'}\n")
    result = _run("explain_vgg.py", "--smoke", cwd=tmp_path)
    assert _is_png(tmp_path / "out" / "vgg11_explanations.png")
    assert "RANDOM weights" in result.stderr
    assert "explained with epsilon_gamma_box" in result.stdout


def test_explain_vgg_without_images_says_where_to_put_them(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "explain_vgg.py")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode != 0
    assert "pass --imagenet-dir DIR, or write ImageNetDir = DIR" in result.stderr


def test_docs_build_strict(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_concepts_on_digits(tmp_path):
    result = _run("concepts.py", "--smoke", "--out", "c/concepts.png", cwd=tmp_path)
    assert _is_png(tmp_path / "c" / "concepts.png")
    assert "% of conv 2's relevance, heatmap sums to" in result.stdout
    assert "of conv 2 draws on channels" in result.stdout


def test_explain_text_smoke(tmp_path):
    pytest.importorskip("transformers", reason="transformers is the [text] extra")
    result = _run("explain_text.py", "--smoke", cwd=tmp_path)
    assert "next token" in result.stdout and "\x1b[48;2;" in result.stdout
    assert "<span" in (tmp_path / "out" / "explanation.html").read_text()


def test_explain_generation_smoke(tmp_path):
    pytest.importorskip("transformers", reason="transformers is the [text] extra")
    result = _run("explain_generation.py", "--smoke", "--max-new-tokens", "3", cwd=tmp_path)
    assert "3 generated tokens explained" in result.stdout and "\x1b[48;2;" in result.stdout
    assert "const DATA = " in (tmp_path / "out" / "generation.html").read_text()
    assert _is_png(tmp_path / "out" / "generation.png")


def test_explain_vit_smoke(tmp_path):
    result = _run("explain_vit.py", "--smoke", cwd=tmp_path)
    assert _is_png(tmp_path / "out" / "vit_explanations.png")
    assert "attnlrp(gamma=0.25) and cp_lrp" in result.stdout


def test_atlas_digits(tmp_path):
    result = _run("atlas_digits.py", "--smoke", "--out", "atlas", cwd=tmp_path)
    assert _is_png(tmp_path / "atlas" / "atlas.png")
    assert (tmp_path / "atlas" / "atlas.zarr" / "layers" / "3").is_dir()
    assert "class 9: channels" in result.stdout


def test_explain_lstm(tmp_path):
    result = _run("explain_lstm.py", "--smoke", cwd=tmp_path)
    assert _is_png(tmp_path / "out" / "lstm_tokens.png")
    assert "test accuracy:" in result.stdout and "share of |relevance| on the key" in result.stdout
