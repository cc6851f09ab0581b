"""Inputs a new user gets wrong, and a transformer that used to fail (issue 22).

A sample without its batch axis gets "add a batch axis"; a 16-bit input warns that its
relevance is only as precise as 16 bits; `lrpfn.relevances` on a plan whose node values
merge the batch into another axis (LeViT's attention) works.
"""

import warnings

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import InvalidInputError, LowPrecisionWarning


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def test_a_sample_without_its_batch_axis_is_told_to_add_one():
    x = torch.randn(3, 16, 16)
    model = small_cnn()
    with pytest.raises(RuntimeError):
        model(x)  # the premise: torch runs the convolutions unbatched and fails in Linear
    with pytest.raises(InvalidInputError, match=r"add a batch axis, x\[None\]"):
        lrpfn.lrp(model, x, rules.Epsilon())
    plan = lrpfn.prepare(model, rules.Epsilon())
    with pytest.raises(InvalidInputError, match="first convolution"):
        lrpfn.engine.model_output(plan, x)
    assert lrpfn.lrp(plan, x[None]).shape == (1, 3, 16, 16)  # the fix works


def test_a_model_that_reshapes_its_input_first_is_not_mistaken_for_one():
    class Signal(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 2, 3)
            self.fc = nn.Linear(2 * 6, 2)

        def forward(self, x):  # x: (batch, length)
            return self.fc(self.conv(x[:, None]).flatten(1))

    relevance = lrpfn.lrp(Signal().eval(), torch.randn(2, 8), rules.Epsilon())
    assert relevance.shape == (2, 8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_16_bit_input_warns_about_precision(dtype):
    model, x = small_cnn(), torch.randn(2, 3, 8, 8)
    reference = lrpfn.lrp(model, x, rules.Epsilon())
    with pytest.warns(LowPrecisionWarning, match=f"x is {dtype}"):
        low = lrpfn.lrp(model.to(dtype), x.to(dtype), rules.Epsilon())
    difference = (low.float() - reference).abs().max() / reference.abs().max()
    assert difference > 1e-4  # the premise: 16 bits are visibly less precise than 32
    with warnings.catch_warnings():
        warnings.simplefilter("error", LowPrecisionWarning)
        lrpfn.lrp(model.float(), x, rules.Epsilon())  # float32: no warning


@pytest.fixture(scope="module")
def levit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("levit_128", pretrained=False, num_classes=10, img_size=128)
    return model.eval()


def test_levit_relevances_rescale_values_whose_batch_axis_is_merged(levit):
    x = torch.randn(2, 3, 128, 128).clamp(-3, 3)
    x[1] *= 1e-3  # samples of very different scale: per-sample scales differ
    plan = lrpfn.prepare(levit, composites.epsilon_gamma_box(low=-3, high=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lrpfn.errors.ConservationWarning)
        recorded = lrpfn.relevances(plan, x)
        relevance = lrpfn.lrp(plan, x)
    tensors = [value for value in recorded.values() if isinstance(value, torch.Tensor)]
    assert any(value.ndim and value.shape[0] != 2 for value in tensors)  # the premise
    assert all(torch.isfinite(value).all() for value in tensors)
    first = recorded[next(iter(recorded))]  # the input entry; lrp may take the folded walk
    torch.testing.assert_close(first, relevance, rtol=1e-5, atol=1e-6 * relevance.abs().max())
