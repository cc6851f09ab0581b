"""benchmarks/zoo_timm.py's building blocks on one tiny timm model: the row, the
'unmodified' check, the bias-free copy and the section written into docs/models.md."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("timm", reason="timm is a test extra (pip install timm)")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def zoo_timm():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("zoo_timm")


def test_row_of_a_tiny_timm_model_is_explained_conserving_and_unmodified(zoo_timm):
    row = zoo_timm.measure("test_resnet", 32, repeats=1)
    assert tuple(row) == zoo_timm.COLUMNS
    assert (row["capture"], row["explained"], row["unmodified"]) == ("fx", "yes", "yes")
    # float32 rounding only: here relevance of both signs (sum of |R| 0.73) adds up to a
    # logit of -0.0013, so the relative error is 600 times float32's; float64 gives 1e-15
    assert row["LRP-0, no biases: |ΣR / logit - 1|"] <= 1e-4


def test_unmodified_check_sees_a_changed_attribute_and_a_written_tensor(zoo_timm):
    model = zoo_timm.build("test_resnet", 32)
    before = zoo_timm.attribute_snapshot(model)
    model.fc.cache = {}
    assert not zoo_timm.unchanged(before, zoo_timm.attribute_snapshot(model))
    del model.fc.cache
    assert zoo_timm.unchanged(before, zoo_timm.attribute_snapshot(model))
    with torch.no_grad():
        model.fc.weight.mul_(1.0)  # same values, but written: the version counter moves
    assert not zoo_timm.unchanged(before, zoo_timm.attribute_snapshot(model))


def test_bias_free_copy_zeroes_biases_and_transformer_constants_only(zoo_timm):
    assert zoo_timm.is_additive("blocks.0.attn.qkv.bias")
    assert zoo_timm.is_additive("cls_token") and zoo_timm.is_additive("pos_embed")
    assert zoo_timm.is_additive("bn1.running_mean")
    assert not zoo_timm.is_additive("bn1.running_var") and not zoo_timm.is_additive("fc.weight")


def test_section_replaces_its_old_version_and_keeps_the_rest(zoo_timm, tmp_path):
    row = {**dict.fromkeys(zoo_timm.COLUMNS), "model": "m", "capture": "fx", "explained": "yes"}
    path = tmp_path / "models.md"
    path.write_text("# torchvision part\n")
    zoo_timm.write_section(path, zoo_timm.markdown([row], "cmd", "machine"))
    path.write_text(path.read_text() + "\nnotes after the table\n")
    zoo_timm.write_section(path, zoo_timm.markdown([row, {**row, "model": "n"}], "cmd", "machine"))
    text = path.read_text()
    assert text.startswith("# torchvision part\n")
    assert text.count(zoo_timm.BEGIN) == 1 and "**2 of 2 explained** (100%)" in text.replace(
        "\n", " "
    )
    assert text.rstrip().endswith("notes after the table")
