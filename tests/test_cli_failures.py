"""What a new user of the command line trips over (issue 22): every failure is one line.

Each test runs the installed console script `lrpfn` in a subprocess with this tree first on
`PYTHONPATH`, as a user would, and checks stderr: one line, no traceback, the fix named.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lrpfn
from lrpfn.cli import VERBS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = Path(sys.executable).parent / "lrpfn"

MODEL_FILE = """
import torch
from torch import nn


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()


def half_net():
    return make_net().half()


def broken_factory():
    raise ValueError("the factory needs a config file")
"""


def lrpfn_script(*arguments: str, cwd: Path, **environment: str) -> subprocess.CompletedProcess:
    """The console script, with this tree (and tests/) first on the import path."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", **environment}
    env.pop("LRPFN_TRACEBACK", None)
    return subprocess.run(
        [str(SCRIPT), *arguments], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def one_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    """The single line a failed command printed on stderr (asserting it is one line)."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("lrpfn: warning")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def workspace(tmp_path) -> Path:
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    (tmp_path / "imgs").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "imgs" / "a.png")
    return tmp_path


def test_a_channel_mismatch_names_the_node_and_the_fix(workspace):
    result = lrpfn_script(
        "explain", "--model", "mymodel.py:make_net", "--input", "imgs", "--out", "o",
        "--grayscale", "--quiet", cwd=workspace,
    )  # fmt: skip
    line = one_line(result)
    assert line.startswith("lrpfn explain: error: the forward pass failed at node %_0")
    assert "takes 3 channel(s) and the input has 1" in line and "--grayscale" in line
    assert "in_channels=1" in line


def test_a_half_precision_model_names_the_dtype_fix(workspace):
    result = lrpfn_script(
        "explain", "--model", "mymodel.py:half_net", "--input", "imgs", "--out", "o",
        cwd=workspace,
    )  # fmt: skip
    line = one_line(result)
    assert "the forward pass failed at node %_0" in line and "model.float()" in line


def test_a_model_failing_in_a_data_set_run_is_one_line_and_creates_no_store(workspace):
    result = lrpfn_script(
        "explain-dataset", "--model", "mymodel.py:make_net", "--data", "digits",
        "--out", "d.zarr", "--quiet", cwd=workspace,
    )  # fmt: skip
    line = one_line(result)
    assert line.startswith("lrpfn explain-dataset: error: the forward pass failed at node %_0")
    assert "takes 3 channel(s) and the input has 1" in line
    assert not (workspace / "d.zarr").exists()


def test_the_data_set_runner_raises_node_failed_error_like_lrp(workspace, tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(workspace))
    try:
        import mymodel
    finally:
        sys.path.remove(str(workspace))
    with pytest.raises(lrpfn.errors.NodeFailedError, match="takes 3 channel"):
        lrpfn.datasets.explain(
            mymodel.make_net(), lrpfn.datasets.Digits(), lrpfn.rules.Epsilon(),
            tmp_path / "s.zarr", progress=False,
        )  # fmt: skip
    assert not (tmp_path / "s.zarr").exists()


def test_a_model_file_imports_the_files_beside_it(workspace):
    folder = workspace / "models"
    folder.mkdir()
    (folder / "mymodel.py").write_text(MODEL_FILE)
    (folder / "trainmode.py").write_text("from mymodel import make_net\n\nnet = make_net()\n")
    result = lrpfn_script(
        "explain", "--model", f"{folder / 'trainmode.py'}:net", "--input", "imgs",
        "--out", "o", "--quiet", cwd=workspace,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (workspace / "o" / "a.png").is_file()


def test_any_other_exception_is_one_line_with_its_type(workspace):
    line = one_line(lrpfn_script("check", "--model", "mymodel.py:broken_factory", cwd=workspace))
    assert line.startswith("lrpfn check: error: ValueError: the factory needs a config file")
    assert "LRPFN_TRACEBACK=1" in line


INTERRUPTING_MODEL = """
import os, signal, time


def make_net():
    os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while the model loads
    time.sleep(5)
"""


@pytest.mark.parametrize(("rank", "printed"), [("0", ["lrpfn check: interrupted"]), ("1", [])])
def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path, rank, printed):
    (tmp_path / "slow.py").write_text(INTERRUPTING_MODEL)
    result = lrpfn_script("check", "--model", "slow.py:make_net", cwd=tmp_path, RANK=rank)
    assert result.returncode == 130
    assert result.stderr.splitlines() == printed  # under torchrun only rank 0 says so


def test_version(tmp_path):
    result = lrpfn_script("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"lrpfn {lrpfn.__version__}"


def test_check_table_columns_line_up_with_their_header(workspace):
    result = lrpfn_script(
        "check", "--model", "mymodel.py:make_net", "--rules", "epsilon_plus", cwd=workspace
    )
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()[1:]
    starts = [header.index(column) for column in ("module", "family", "rule")]
    for row in rows:
        for start in starts:  # every cell starts where its column's name starts
            assert row[start - 2 : start] == "  " and row[start] != " ", (header, row)


def test_the_command_line_page_documents_every_verb():
    page = (ROOT / "docs" / "cli.md").read_text()
    names = []
    for verb in VERBS:
        parser = __import__("argparse").ArgumentParser()
        verb.register(parser.add_subparsers())
        names.extend(parser._subparsers._group_actions[0].choices)
    assert len(names) == len(VERBS)
    for name in names:
        assert f"## `lrpfn {name}`" in page
    count = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}[len(names)]
    assert f"has {count} commands" in page


def test_readme_and_the_coverage_page_count_the_same_torchvision_models():
    coverage = (ROOT / "docs" / "models.md").read_text()
    start = coverage.index("| alexnet")
    table = coverage[start : coverage.index("\n\n", start)]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    explained = sum(1 for row in rows if row.split("|")[3].strip() == "yes")
    assert f"**{explained} of {len(rows)}\nexplained**" in coverage
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"all {len(rows)} torchvision classifiers", readme)


def test_the_package_declares_its_type_hints():
    assert (Path(lrpfn.__file__).parent / "py.typed").is_file()
    assert 'lrpfn = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_explain_writes_a_figure_with_any_matplotlib_colormap(workspace):
    result = lrpfn_script(
        "explain", "--model", "mymodel.py:make_net", "--input", "imgs", "--out", "o",
        "--figure", "--cmap", "RdBu_r", "--percentile", "99", "--quiet", cwd=workspace,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (workspace / "o" / "a_figure.png").is_file() and (workspace / "o" / "a.png").is_file()
    bad = lrpfn_script(
        "explain", "--model", "mymodel.py:make_net", "--input", "imgs", "--out", "o",
        "--cmap", "no_such_colormap", cwd=workspace,
    )  # fmt: skip
    assert "unknown colormap 'no_such_colormap'" in one_line(bad)


def test_a_small_image_is_explained_at_its_own_size_by_a_torchvision_model(workspace):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(workspace / "imgs" / "a.png")  # 48 wide, 64 high
    result = lrpfn_script(
        "explain", "--model", "torchvision:resnet18", "--input", "imgs", "--out", "o",
        "--quiet", cwd=workspace,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with Image.open(workspace / "o" / "a.png") as heat:
        assert heat.size == (48, 48)  # centre-cropped to its shorter side, never enlarged
