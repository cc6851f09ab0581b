"""The `lrpfn` command line, end to end on a tiny model and generated images.

The model is `tests/tiny_models.py:tiny_cnn` (a `module:attr` factory). Where a test
compares numbers, the expected relevance comes from `lrpfn.lrp` on an input preprocessed
by hand in the test (pixels / 255, then (x - mean) / std), so the CLI's file reading,
preprocessing, rule choice and writing are all checked.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lrpfn
from lrpfn import composites, image
from lrpfn.cli import main
from lrpfn.composites import PRESETS
from lrpfn.rules import RULE_KEYS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiny_models  # noqa: E402

TINY = f"{HERE / 'tiny_models.py'}:tiny_cnn"


def cli(command: str) -> int:
    """Run the command line in-process (paths here contain no spaces)."""
    return main(command.split())


def _write_image(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    _write_image(folder / "a.png", 20, 24, seed=0)
    _write_image(folder / "nested" / "b.png", 30, 18, seed=1)
    (folder / "notes.txt").write_text("not an image")
    return folder


def _by_hand(pixels: np.ndarray, mean: float, std: float) -> torch.Tensor:
    x = torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255.0
    return ((x - mean) / std).unsqueeze(0)


def test_explain_writes_a_heatmap_and_relevance_per_image(images, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli(
        f"explain --model {TINY} --input {images} --rules epsilon_plus --resize 16 --crop 16 "
        f"--batch-size 1 --out {out} --save-npy --overlay"
    )
    assert status == 0
    for stem in ("a", "nested/b"):
        with Image.open(out / f"{stem}.png") as heat:
            assert heat.size == (16, 16) and heat.mode == "RGB"
        assert (out / f"{stem}_overlay.png").is_file()
        assert np.load(out / f"{stem}.npy").shape == (3, 16, 16)
    assert not (out / "notes.png").exists()
    printed = capsys.readouterr().out
    assert "a.png: class" in printed and "wrote 2 heatmap(s)" in printed


def test_saved_relevance_equals_the_library_on_the_same_input(tmp_path):
    picture, out = tmp_path / "x.png", tmp_path / "out"
    pixels = _write_image(picture, 16, 16, seed=2)
    status = cli(
        f"explain --model {TINY} --input {picture} --rules alpha2beta1 --mean 0.5 --std 0.25 "
        f"--out {out} --save-npy"
    )
    assert status == 0
    expected = lrpfn.lrp(tiny_models.tiny_cnn(), _by_hand(pixels, 0.5, 0.25), "alpha2beta1")[0]
    saved = np.load(out / "x.npy")
    np.testing.assert_allclose(saved, expected.numpy(), rtol=1e-5, atol=1e-7)
    with Image.open(out / "x.png") as heat:
        assert np.array_equal(np.asarray(heat), image.heatmap(expected))


def test_epsilon_gamma_box_bounds_are_the_normalised_pixel_range(tmp_path):
    # For inputs (p - mean) / std with pixels p in [0, 1] the box is low = -mean / std,
    # high = (1 - mean) / std; per channel, here one mean and std for all three.
    picture, out = tmp_path / "x.png", tmp_path / "out"
    pixels = _write_image(picture, 12, 12, seed=3)
    status = cli(
        f"explain --model {TINY} --input {picture} --rules epsilon_gamma_box --mean 0.4 "
        f"--std 0.2 --out {out} --save-npy"
    )
    assert status == 0
    box = composites.epsilon_gamma_box(low=-0.4 / 0.2, high=0.6 / 0.2)
    expected = lrpfn.lrp(tiny_models.tiny_cnn(), _by_hand(pixels, 0.4, 0.2), box)[0]
    np.testing.assert_allclose(np.load(out / "x.npy"), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_weights_and_target_are_used(tmp_path):
    picture, weights, out = tmp_path / "x.png", tmp_path / "weights.pt", tmp_path / "out"
    pixels = _write_image(picture, 10, 10, seed=4)
    other = tiny_models.tiny_cnn(seed=7)
    torch.save(other.state_dict(), weights)
    status = cli(
        f"explain --model {TINY} --weights {weights} --input {picture} --rules epsilon "
        f"--target 2 --out {out} --save-npy"
    )
    assert status == 0
    expected = lrpfn.lrp(other, _by_hand(pixels, 0.0, 1.0), "epsilon", target=2)[0]
    np.testing.assert_allclose(np.load(out / "x.npy"), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_grayscale_models_get_one_channel(tmp_path):
    picture, out = tmp_path / "x.png", tmp_path / "out"
    _write_image(picture, 9, 9, seed=5)
    model = f"{HERE / 'tiny_models.py'}:tiny_gray_cnn"
    status = cli(
        f"explain --model {model} --input {picture} --grayscale --rules epsilon_gamma_box "
        f"--out {out} --save-npy"
    )
    assert status == 0
    assert np.load(out / "x.npy").shape == (1, 9, 9)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["--model", "torchvision:no_such_net"], "unknown model 'torchvision:no_such_net'"),
        (["--model", "no_colon"], "unknown model 'no_colon'"),
        (["--model", "no_such_module:make"], "cannot import module 'no_such_module'"),
        (["--model", "tiny_models:missing"], "has no attribute 'missing'"),
        (["--model", "tiny_models:NOT_A_MODEL"], "neither an nn.Module"),
        (["--model", "missing_file.py:make"], "model file not found: missing_file.py"),
        (["--rules", "epsilon2"], "unknown rule 'epsilon2'"),
        (["--rules", "patternnet"], "needs patterns"),
        (["--weights", "missing.pt"], "weights file not found: missing.pt"),
        (["--input", "missing_folder"], "input not found: missing_folder"),
        (["--target", "7"], "out of range"),
        (["--device", "cuda:9"], "--device cuda:9"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "2"], "images of one batch differ in size (a.png (20, 24), b.png"),
    ],
)
def test_bad_arguments_exit_nonzero_with_a_one_line_message(
    arguments, problem, images, tmp_path, capsys, monkeypatch
):
    if arguments[:2] == ["--device", "cuda:9"] and torch.cuda.device_count() > 9:
        pytest.fail("this test assumes no tenth GPU")
    monkeypatch.syspath_prepend(str(HERE))
    defaults = {"--model": TINY, "--input": str(images), "--rules": "epsilon", "--crop": "16"}
    if "--batch-size" in arguments:
        del defaults["--crop"]
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        defaults[flag] = value
    argv = ["explain", "--out", str(tmp_path / "out")]
    for flag, value in defaults.items():
        argv += [flag, value]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert problem in error
    assert len(error.splitlines()) == 1, error


def test_an_unreadable_image_is_named(tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    status = cli(f"explain --model {TINY} --input {tmp_path / 'broken.png'} --out {tmp_path / 'o'}")
    assert status == 1
    assert "cannot read image" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_model_are_reported(tmp_path, capsys):
    torch.save(tiny_models.tiny_cnn().state_dict(), tmp_path / "tiny.pt")
    status = main(
        ["check", "--model", "torchvision:resnet18", "--weights", str(tmp_path / "tiny.pt")]
    )
    assert status == 1
    assert "does not fit torchvision:resnet18" in capsys.readouterr().err


def test_torchvision_model_without_weights_warns_and_uses_imagenet_size(tmp_path, capsys):
    _write_image(tmp_path / "photo.jpg", 300, 260, seed=6)
    _write_image(tmp_path / "small.jpg", 40, 30, seed=7)
    out = tmp_path / "out"
    status = cli(
        f"explain --model torchvision:resnet18 --input {tmp_path} "
        f"--rules epsilon_plus --out {out} --save-npy --batch-size 1"
    )
    assert status == 0
    assert "RANDOM weights" in capsys.readouterr().err
    assert np.load(out / "photo.npy").shape == (3, 224, 224)  # resize 256, crop 224
    # the ImageNet defaults never enlarge: a 40 x 30 image is cropped to 30 x 30 (issue 22)
    assert np.load(out / "small.npy").shape == (3, 30, 30)


def test_rules_lists_every_key_and_preset_with_parameters(capsys):
    assert main(["rules"]) == 0
    printed = capsys.readouterr().out
    for key in (*RULE_KEYS, *PRESETS, "patternnet", "patternattribution"):
        assert key in printed
    assert "Epsilon(epsilon=0.1)" in printed  # the key's resolved rule
    assert "epsilon_gamma_box(low, high, epsilon=1e-06, gamma=0.25" in printed
    assert "AlphaBeta(alpha=2.0, beta=1.0" in printed


def test_check_prints_the_resolved_rule_table(capsys):
    assert main(["check", "--model", TINY, "--rules", "epsilon_gamma_box"]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line for line in lines[2:]}
    # node names of the traced Sequential: "_0" is module "0", the first convolution.
    # the box is [0, 1] per channel for mean 0 and std 1
    assert "ZBox(low=[0.0, 0.0, 0.0], high=[1.0, 1.0, 1.0]" in table["_0"]
    assert "Gamma(gamma=0.25" in table["_3"]
    assert "Epsilon(epsilon=1e-06)" in table["_7"]
    assert "pooling" in table["_5"]


def test_check_reports_unsupported_nodes(capsys):
    model = f"{HERE / 'tiny_models.py'}:unsupported_model"
    assert main(["check", "--model", model, "--rules", "epsilon"]) == 1
    printed = capsys.readouterr().out
    assert "not ready to explain" in printed and "sort" in printed


def _run(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
    return subprocess.run(
        arguments, capture_output=True, text=True, cwd=cwd, env=environment, timeout=300
    )


def test_module_and_console_script_run_the_same_command_line(images, tmp_path):
    script = Path(sys.executable).parent / "lrpfn"
    assert script.is_file(), "the console script lrpfn is not installed (pip install -e .)"
    listed = _run(str(script), "rules", cwd=tmp_path)
    assert listed.returncode == 0 and "alpha2beta1" in listed.stdout
    explained = _run(
        sys.executable, "-m", "lrpfn", "explain", "--model", "tiny_models:tiny_cnn",
        "--input", str(images), "--crop", "16", "--out", "heatmaps", cwd=tmp_path,
    )  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    assert (tmp_path / "heatmaps" / "a.png").is_file()
    assert (tmp_path / "heatmaps" / "nested" / "b.png").is_file()


def test_errors_print_no_traceback(tmp_path):
    result = _run(
        sys.executable, "-m", "lrpfn", "explain", "--model", "nowhere:net",
        "--input", str(tmp_path), "--out", "o", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "lrpfn explain: error: no images (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp, "
        f".ppm) in {tmp_path}"
    ]
