"""`lrpfn evaluate` end to end on a tiny model and generated images, and every verb's
behaviour when the reader of its output has gone (`lrpfn rules | head -1`)."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrpfn import composites, evaluate
from lrpfn.cli import VERBS, main

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tiny_models  # noqa: E402

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

TINY = f"{HERE / 'tiny_models.py'}:tiny_cnn"


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{seed}.png")
    return folder


def test_evaluate_writes_the_table_csv_and_curves(images, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        f"evaluate --model {TINY} --input {images} --rules epsilon,epsilon_plus --patch 4 "
        f"--steps 8 --perturbation 0.5 --out {out}".split()
    )
    assert status == 0
    with (out / "aopc.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["method"] for row in rows] == ["epsilon", "epsilon_plus", "random order"]
    with Image.open(out / "curves.png") as figure:
        assert figure.format == "PNG"
    printed = capsys.readouterr().out
    assert "AOPC MoRF" in printed and "epsilon_plus" in printed and "aopc.csv" in printed
    # the same numbers from the library on inputs read by hand (pixels / 255)
    x = torch.stack([_read(images / f"{seed}.png") for seed in range(3)])
    model = tiny_models.tiny_cnn()
    relevance = evaluate.compare(
        model,
        x,
        {"epsilon": composites.key_composite("epsilon")},
        patch=4,
        steps=8,
        perturbation=0.5,
    ).methods[0]
    assert float(rows[0]["aopc_morf"]) == pytest.approx(relevance.aopc_morf, abs=1e-6)
    assert float(rows[0]["aopc_lerf"]) == pytest.approx(relevance.aopc_lerf, abs=1e-6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("--rules epsilon,nope", "unknown rule 'nope'"),
        ("--perturbation zeros", "unknown --perturbation 'zeros'"),
        ("--patch 4 --steps 17", "more than the 16 patch(es)"),
    ],
)
def test_evaluate_errors_are_one_line(images, tmp_path, capsys, arguments, message):
    command = f"evaluate --model {TINY} --input {images} --out {tmp_path} {arguments}"
    assert main(command.split()) == 1
    assert message in capsys.readouterr().err


def _read(path: Path) -> torch.Tensor:
    with Image.open(path) as picture:
        pixels = np.asarray(picture, dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 255.0


VERB_COMMANDS = {
    "rules": ["rules"],
    "check": ["check", "--model", TINY, "--rules", "epsilon"],
    "explain": ["explain", "--model", TINY, "--input", "{images}", "--out", "heat", "--quiet"],
    "evaluate": [
        "evaluate", "--model", TINY, "--input", "{images}", "--out", "eval", "--patch", "4",
        "--steps", "4",
    ],
    "explain_dataset": [
        "explain-dataset", "--model", "lrpfn.datasets:digits_cnn", "--data", "digits",
        "--rules", "epsilon", "--out", "store.zarr", "--batch-size", "512", "--quiet",
    ],
    "atlas": [
        "atlas", "--model", "lrpfn.datasets:digits_cnn", "--data", "digits", "--rules",
        "epsilon", "--layer", "3", "--out", "atlas.zarr", "--batch-size", "512", "--k", "4",
        "--references", "2", "--size", "8", "--plot-concepts", "2", "--quiet",
    ],
    "report": ["report", "store.zarr", "--out", "site", "--no-spray"],  # the store: see below
}  # fmt: skip


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("verb", list(VERB_COMMANDS))
def test_every_verb_ends_quietly_when_stdout_is_a_closed_pipe(
    verb, buffered, images, tmp_path, monkeypatch
):
    """In-process: stdout is a pipe whose reader has gone. Block-buffered (as in a shell),
    the output fails only when flushed at the end; unbuffered, at the first write."""
    assert set(VERB_COMMANDS) == {module.__name__.rsplit(".", 1)[1] for module in VERBS}
    monkeypatch.chdir(tmp_path)
    if verb == "report":  # the report reads a store: written first, with stdout intact
        assert main(VERB_COMMANDS["explain_dataset"]) == 0
    reader, writer = os.pipe()
    os.close(reader)
    closed = open(writer, "w", buffering=-1 if buffered else 1)  # noqa: SIM115
    monkeypatch.setattr(sys, "stdout", closed)
    arguments = [argument.format(images=images) for argument in VERB_COMMANDS[verb]]
    try:
        assert main(arguments) == 0
        closed.write("after the command: written to devnull, not a broken pipe\n")
        closed.flush()
    finally:
        closed.close()


def test_a_closed_pipe_prints_no_traceback_from_a_process(tmp_path):
    """The interpreter's own flush at exit must not report the broken pipe either."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    environment["PYTHONPATH"] = str(HERE.parent)
    process = subprocess.Popen(
        [sys.executable, "-m", "lrpfn", "rules"], cwd=tmp_path, env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with process:
        process.stdout.close()  # the reader goes before the command writes
        error = process.stderr.read()
        process.wait(timeout=300)
    assert process.returncode == 0, error
    assert error == ""


def test_rules_piped_into_head_prints_one_line_and_no_traceback(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    environment.pop("PYTHONUNBUFFERED", None)
    result = subprocess.run(
        f"{sys.executable} -m lrpfn rules | head -1", shell=True, capture_output=True,
        text=True, cwd=tmp_path, env=environment, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Rule keys (TorchLRP's names, lrpfn's rules; --rules KEY):"
    ]
    assert result.stderr == ""
