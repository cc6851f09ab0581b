"""Models that return mappings or tuples, and regions of dense outputs (issue 22).

`output=` picks the entry to explain (a key or an index), `--output` on the command line;
`lrpfn.Region(class, mask)` explains a class summed over a mask of a segmentation output.
The references are the same explanation through a hand-written wrapper module and a
start relevance built by hand from the output.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import InvalidInputError, InvalidTargetError

ROOT = Path(__file__).resolve().parent.parent


class TwoHeads(nn.Module):
    """Returns `(logits, features)` or `{"logits2": ..., "features": ...}`."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.head = nn.Linear(5, 3)
        self.as_dict = as_dict

    def forward(self, x):
        features = self.body(x)
        if self.as_dict:
            return {"scores": self.head(features), "features": features}
        return self.head(features), features


class First(nn.Module):
    """The hand-written wrapper a user needed before `output=`."""

    def __init__(self, model, key):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        return self.model(x)[self.key]


@pytest.mark.parametrize(("as_dict", "key"), [(False, 0), (False, 1), (True, "scores")])
def test_output_selects_an_entry_like_a_wrapper_module(as_dict, key):
    model, x = TwoHeads(as_dict).eval(), torch.randn(4, 6)
    expected = lrpfn.lrp(First(model, key).eval(), x, rules.Epsilon())
    actual = lrpfn.lrp(model, x, rules.Epsilon(), output=key)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert lrpfn.prepare(model, rules.Epsilon(), output=key).output_key == key


def test_without_output_a_tuple_is_refused_naming_the_fix():
    with pytest.raises(InvalidInputError, match="pass output=KEY or output=INDEX"):
        lrpfn.lrp(TwoHeads().eval(), torch.randn(2, 6), rules.Epsilon())


def test_an_unknown_output_lists_the_entries():
    with pytest.raises(InvalidTargetError, match=r"\['scores', 'features'\]"):
        lrpfn.prepare(TwoHeads(as_dict=True).eval(), rules.Epsilon(), output="logits")
    with pytest.raises(InvalidTargetError, match=r"\[0, 1\]"):
        lrpfn.prepare(TwoHeads().eval(), rules.Epsilon(), output=2)


SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]


def segmentation_model(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    build = getattr(torchvision.models.segmentation, name)
    return build(weights=None, weights_backbone=None, num_classes=3, **options).eval()


@pytest.mark.parametrize("name", SEGMENTATION)
def test_a_class_over_a_mask_of_a_segmentation_output(name):
    model, x = segmentation_model(name), torch.randn(1, 3, 64, 64)
    mask = torch.zeros(64, 64)
    mask[16:48, 8:40] = 1.0
    with torch.no_grad():
        out = model(x)["out"]  # the only entry: chosen without output=
    by_hand = torch.zeros_like(out)
    by_hand[:, 2] = out[:, 2] * mask  # class 2's scores inside the mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lrpfn.errors.ConservationWarning)
        region = lrpfn.lrp(model, x, composites.epsilon_plus(), target=lrpfn.Region(2, mask))
        reference = lrpfn.lrp(model, x, composites.epsilon_plus(), output_relevance=by_hand)
    torch.testing.assert_close(region, reference, rtol=1e-5, atol=1e-6 * reference.abs().max())
    assert region.shape == x.shape and torch.isfinite(region).all()
    if name == "fcn_resnet50":  # no absorption to speak of: the region's score is conserved
        explained = float((out[:, 2] * mask).sum())
        assert abs(float(region.sum()) / explained - 1) < 1e-3


def test_the_auxiliary_head_is_chosen_by_key():
    model, x = segmentation_model("fcn_resnet50", aux_loss=True), torch.randn(1, 3, 32, 32)
    with pytest.raises(InvalidInputError, match="output=KEY"):
        lrpfn.lrp(model, x, composites.epsilon_plus(), target=lrpfn.Region(0))
    relevance = lrpfn.lrp(model, x, composites.epsilon_plus(), target=lrpfn.Region(0), output="aux")
    assert relevance.shape == x.shape


def test_a_region_mask_of_the_wrong_size_is_refused():
    model = segmentation_model("lraspp_mobilenet_v3_large")
    with pytest.raises(InvalidTargetError, match="resize the mask"):
        lrpfn.lrp(
            model, torch.randn(1, 3, 32, 32), rules.Epsilon(),
            target=lrpfn.Region(1, torch.ones(16, 16)),
        )  # fmt: skip


MODEL_FILE = """
import torch
from torch import nn


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        features = torch.relu(self.conv(x)).mean((2, 3))
        return {"features": features, "logits_a": self.fc(features)}


def make_net():
    return Heads().eval()
"""


def test_the_command_line_takes_output(tmp_path):
    (tmp_path / "heads.py").write_text(MODEL_FILE)
    (tmp_path / "imgs").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "imgs" / "a.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = str(Path(sys.executable).parent / "lrpfn")
    common = [script, "explain", "--model", "heads.py:make_net", "--input", "imgs", "--quiet"]
    refused = subprocess.run(
        [*common, "--out", "o1"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "--output on the command line" in refused.stderr
    chosen = subprocess.run(
        [*common, "--out", "o2", "--output", "logits_a"],
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert chosen.returncode == 0, chosen.stderr
    assert (tmp_path / "o2" / "a.png").is_file()
