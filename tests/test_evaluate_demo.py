"""The demo's pixel-flipping part (`examples/demo.py --smoke`): the AOPC table of every
method and the curves figure written beside the grid."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def test_demo_prints_the_aopc_table_and_writes_the_curves(tmp_path):
    environment = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--smoke", "--out", "f/demo.png"],
        capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("pixel flipping on 16 test digits")[1]
    for method in ("gradient x input", "alpha2beta1", "PatternNet (pos)", "epsilon_gamma_box"):
        assert method in table
    assert "AOPC MoRF" in table and "random order" in table
    with Image.open(tmp_path / "f" / "demo_flipping.png") as figure:
        assert figure.format == "PNG"
    assert str(tmp_path / "f" / "demo_flipping.png") in result.stdout
