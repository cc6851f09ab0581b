"""Routes through values with parts that carry no relevance.

`nn.MaxPool2d(return_indices=True)` (and `F.max_pool*d`, `F.adaptive_max_pool*d` with
`return_indices=True`) return `(values, indices)`; the model takes the values out with
`getitem`. The int64 indices are constants: relevance moves through the values exactly as
through a max-pool without indices, and the part of the tuple nobody reads takes none.
References: the same network without indices, and, for LRP-0 on a bias-free network of
ReLUs and max-pools, gradient x input from autograd (float64).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import rules


class Pooled(nn.Module):
    """conv - ReLU - max-pool (indices returned or not, module or functional) - dense."""

    def __init__(self, form: str, bias: bool = True) -> None:
        super().__init__()
        self.form = form
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.pool = nn.MaxPool2d(2, return_indices=form == "module")
        self.head = nn.Linear(4 * 4 * 4, 5, bias=bias)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        if self.form == "module":
            h, _ = self.pool(h)
        elif self.form == "functional":
            h = F.max_pool2d(h, 2, return_indices=True)[0]
        elif self.form == "adaptive":
            h, _ = F.adaptive_max_pool2d(h, 4, return_indices=True)
        else:
            h = self.pool(h)
        return self.head(h.flatten(1))


FORMS = ("module", "functional", "adaptive")


def _models(form: str, bias: bool = True) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    with_indices = Pooled(form, bias).double().eval()
    without = Pooled("plain", bias).double().eval()
    without.load_state_dict(with_indices.state_dict())
    return with_indices, without


@pytest.mark.parametrize("form", FORMS)
def test_max_pool_with_indices_routes_relevance_like_max_pool_without(form):
    with_indices, without = _models(form)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    for mapping in (rules.Epsilon(1e-6), rules.AlphaBeta(2.0, 1.0)):
        expected = lrpfn.lrp(without, x, mapping)
        # the plain max-pool takes the folded walk, the tuple's getitem the plain step: the
        # same relevance to float64 rounding (docs/design.md, the folded walk)
        relevance = lrpfn.lrp(with_indices, x, mapping)
        torch.testing.assert_close(relevance, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("form", FORMS)
def test_lrp0_through_max_pool_with_indices_is_gradient_times_input(form):
    model, _ = _models(form, bias=False)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    target = logits.argmax(1)
    (gradient,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), x)
    relevance = lrpfn.lrp(model, x.detach(), rules.Epsilon(0.0), target=target)
    torch.testing.assert_close(relevance, gradient * x.detach(), rtol=1e-12, atol=1e-14)


def test_several_targets_through_max_pool_with_indices():
    with_indices, without = _models("module")
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    targets = torch.tensor([[0, 4], [1, 1], [3, 2]])
    expected = lrpfn.lrp(without, x, rules.Epsilon(1e-6), target=targets)
    relevance = lrpfn.lrp(with_indices, x, rules.Epsilon(1e-6), target=targets)
    torch.testing.assert_close(relevance, expected, rtol=1e-12, atol=1e-15)
