"""Stores that a typo can no longer poison, and a trained example model (issue 22).

Everything is checked before a store is created; a store without a complete chunk may be
replaced; `--overwrite` replaces one; a settings mismatch lists only what differs, without
tensor reprs; `digits_cnn` is trained, so the documented example explains a real model.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lrpfn
from lrpfn import composites, datasets
from lrpfn.datasets import StoreMismatchError

pytest.importorskip("zarr")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "lrpfn"
TWO_CLASSES = """
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
"""


def lrpfn_script(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [str(SCRIPT), *arguments], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_a_target_out_of_range_is_refused_before_the_store_exists(tmp_path):
    (tmp_path / "two.py").write_text(TWO_CLASSES)
    common = ["explain-dataset", "--model", "two.py:net", "--data", "digits", "--quiet"]
    refused = lrpfn_script(*common, "--out", "s.zarr", "--target", "7", cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "lrpfn explain-dataset: error: target 7 is out of range for the model's 2 classes "
        "(valid: 0..1); nothing was written. Fix: pass a class index, 'label' or None."
    ]
    assert not (tmp_path / "s.zarr").exists()
    corrected = lrpfn_script(*common, "--out", "s.zarr", "--target", "1", cwd=tmp_path)
    assert corrected.returncode == 0, corrected.stderr


def small_run(store, **options):
    subset = torch.utils.data.Subset(datasets.Digits(), range(40))
    defaults = {"batch_size": 20, "progress": False}
    return datasets.explain(
        datasets.digits_cnn(), subset, composites.epsilon_plus(), store, **{**defaults, **options}
    )


def test_a_store_without_a_complete_chunk_is_replaced(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"
    monkeypatch.setattr(datasets._run.RankRun, "chunks", _fail_at_once)
    with pytest.raises(RuntimeError, match="crash before the first chunk"):
        small_run(store, target=3)
    assert store.exists()
    monkeypatch.undo()
    summary = small_run(store, target="label")  # other settings: replaced, not refused
    assert summary.chunks_written == 2


def _fail_at_once(self, *arguments):
    raise RuntimeError("crash before the first chunk")


def test_overwrite_replaces_a_complete_store_and_a_mismatch_lists_only_what_differs(tmp_path):
    store = tmp_path / "s.zarr"
    small_run(store)
    box = composites.epsilon_gamma_box(low=torch.zeros(1, 1, 1, 1), high=torch.ones(1, 1, 1, 1))
    subset = torch.utils.data.Subset(datasets.Digits(), range(40))
    with pytest.raises(StoreMismatchError) as caught:
        datasets.explain(datasets.digits_cnn(), subset, box, store, batch_size=20, progress=False)
    message = str(caught.value)
    assert "tensor(" not in message  # no tensor reprs
    differing = [line for line in message.splitlines() if "store has" in line]
    assert differing and all(line.startswith("  rules._") for line in differing)
    assert "ZBox(low=<(1, 1, 1, 1) tensor, sha256 " in message  # shape and digest instead
    summary = datasets.explain(
        datasets.digits_cnn(), subset, box, store, batch_size=20, progress=False, overwrite=True
    )
    assert summary.chunks_written == 2


def test_the_example_model_is_trained():
    digits = datasets.Digits()
    model = datasets.digits_cnn()
    held_out = slice(datasets.TRAINED_ON, None)
    with torch.no_grad():
        predicted = model(digits.images[held_out]).argmax(1)
        untrained = datasets.digits_cnn(trained=False)(digits.images[held_out]).argmax(1)
    accuracy = (predicted == digits.labels[held_out]).double().mean()
    assert accuracy > 0.85  # measured 0.92; an untrained net is near 0.1
    assert (untrained == digits.labels[held_out]).double().mean() < 0.3
    for first, second in zip(
        model.state_dict().values(), datasets.digits_cnn().state_dict().values(), strict=True
    ):
        assert torch.equal(first, second)  # the same weights on every call
    relevance = lrpfn.lrp(model, digits.images[held_out][:8], composites.epsilon_plus())
    assert torch.isfinite(relevance).all()
