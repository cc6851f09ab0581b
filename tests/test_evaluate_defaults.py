"""`lrpfn evaluate` with its defaults on small images, and legible curves (issue 22)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrpfn import evaluate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = Path(sys.executable).parent / "lrpfn"

# the tiny test model's relevance can grow with biases (see tests/test_rule_keys.py)
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


def test_evaluate_runs_on_64_pixel_images_with_its_defaults(tmp_path):
    (tmp_path / "imgs").mkdir()
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "imgs" / f"{seed}.png")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}"}
    result = subprocess.run(
        [str(SCRIPT), "evaluate", "--model", "tiny_models:tiny_cnn", "--input", "imgs",
         "--rules", "epsilon,epsilon_plus", "--out", "ev"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr  # 16 patches of 16 px: 16 steps, not 20
    assert (tmp_path / "ev" / "aopc.csv").is_file() and (tmp_path / "ev" / "curves.png").is_file()


def test_curves_have_integer_step_ticks(tmp_path):
    sys.path.insert(0, str(HERE))
    import tiny_models

    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    comparison = evaluate.compare(
        tiny_models.tiny_cnn(), x, {"epsilon": "epsilon"}, patch=4, steps=3, perturbation=0.0
    )
    figure = evaluate.plot_curves(comparison, tmp_path / "c.png")
    ticks = figure.axes[0].get_xticks()
    shown = [t for t in ticks if 0 <= t <= 3]  # matplotlib alone would tick 0, 0.5, ..., 3
    assert shown and all(float(t).is_integer() for t in shown)


def test_the_randomisation_test_has_a_plot(tmp_path):
    sys.path.insert(0, str(HERE))
    import tiny_models

    torch.manual_seed(0)
    model, x = tiny_models.tiny_cnn(), torch.rand(2, 3, 12, 12)
    result = evaluate.parameter_randomisation(model, x, "epsilon")
    figure = evaluate.plot_randomisation(result, tmp_path / "r.png", title="tiny_cnn")
    axis = figure.axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == list(result.layers)
    assert len(axis.get_lines()) == len(result.similarity) + 1  # one per measure, and y = 0
    assert (tmp_path / "r.png").is_file()
