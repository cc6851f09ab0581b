"""Cases small enough to work by hand; each expected value is derived in the comments.

Notation: a neuron $z = \\sum_i a_i w_i + b$ with contributions $c_i = a_i w_i$ and
output relevance $R$; $x^+ = \\max(x, 0)$, $x^- = \\min(x, 0)$. Stabilizers are 0 unless
a case is about them, so the numbers stay exact.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, ZPlus

DTYPE = torch.float64


def _neuron() -> nn.Linear:
    """$a = (2, 1)$, $w = (1, -3)$, $b = 2$: $c = (2, -3)$, $z = 2 - 3 + 2 = 1$."""
    layer = nn.Linear(2, 1).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -3.0]]))
        layer.bias.copy_(torch.tensor([2.0]))
    return layer


NEURON_INPUT = torch.tensor([[2.0, 1.0]], dtype=DTYPE)

NEURON_CASES = {
    # LRP-0: R_i = c_i / z * R = (2, -3) / 1 * 1 = (2, -3). The bias keeps the rest:
    # 2 - 3 = -1 = R - b / z * R.
    "lrp0": (Epsilon(0.0), [2.0, -3.0]),
    # LRP-epsilon, eps = 1: R_i = c_i / (z + eps) * R = (2, -3) / 2 = (1, -1.5).
    "epsilon_1": (Epsilon(1.0), [1.0, -1.5]),
    # z+: positive contributions c^+ = (2, 0), bias b^+ = 2, z^+ = 4:
    # R_i = c^+_i / z^+ * R = (2/4, 0) = (0.5, 0).
    "zplus": (ZPlus(stabilizer=0.0), [0.5, 0.0]),
    # z+ without the bias: z^+ = 2, R = (2/2, 0) = (1, 0).
    "zplus_ignore_bias": (ZPlus(stabilizer=0.0, ignore_bias=True), [1.0, 0.0]),
    # alpha=2, beta=1: positive part 2 * c^+ / (c^+ sum + b^+) = 2 * (2, 0) / 4 = (1, 0);
    # negative part c^- = (0, -3), b^- = 0, z^- = -3: 1 * (0, -3) / -3 = (0, 1).
    # R = (1, 0) - (0, 1) = (1, -1).
    "alpha2beta1": (AlphaBeta(2, 1, stabilizer=0.0), [1.0, -1.0]),
    # Gamma, gamma = 1 (z = 1 > 0): contributions c + gamma c^+ = (2, -3) + (2, 0) = (4, -3),
    # bias b + gamma b^+ = 4, denominator 4 - 3 + 4 = 5: R = (4/5, -3/5).
    "gamma_1": (Gamma(1.0, stabilizer=0.0), [0.8, -0.6]),
    # z^B with l = -1, h = 2: z_i = a_i w_i - l w_i^+ - h w_i^-:
    #   i=1 (w=1):  2*1 - (-1)*1 - 2*0    = 3
    #   i=2 (w=-3): 1*(-3) - (-1)*0 - 2*(-3) = 3
    # (bias: b - b^+ - b^- = 0). R = (3, 3) / 6 = (0.5, 0.5).
    "zbox": (ZBox(-1.0, 2.0, stabilizer=0.0), [0.5, 0.5]),
    # flat: every input counts 1: R = (1, 1) / 2.
    "flat": (Flat(0.0), [0.5, 0.5]),
    # w^2: w^2 = (1, 9), sum 10: R = (0.1, 0.9).
    "wsquare": (WSquare(0.0), [0.1, 0.9]),
}


@pytest.mark.parametrize("name", list(NEURON_CASES))
def test_two_input_neuron_by_hand(name: str) -> None:
    rule, expected = NEURON_CASES[name]
    relevance = lrpfn.lrp(
        nn.Sequential(_neuron()),
        NEURON_INPUT,
        rule,
        output_relevance=torch.ones(1, 1, dtype=DTYPE),
    )
    torch.testing.assert_close(relevance, torch.tensor([expected], dtype=DTYPE))


def test_lrp0_zero_denominator_gives_zero_not_nan() -> None:
    # a = (1, 1), w = (1, -1), b = 0: z = 1 - 1 = 0 exactly. LRP-0 would divide by 0;
    # the convention is that a zero denominator passes no relevance: R_in = (0, 0).
    layer = nn.Linear(2, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.ones(1, 2, dtype=DTYPE)
    relevance = lrpfn.lrp(
        nn.Sequential(layer), x, Epsilon(0.0), output_relevance=torch.full((1, 1), 5.0, dtype=DTYPE)
    )
    assert torch.equal(relevance, torch.zeros(1, 2, dtype=DTYPE))


def test_max_pooling_is_winner_take_all() -> None:
    # One 2x2 window [[1, 3], [2, -1]] with maximum 3 at (0, 1): its output carries R = 5,
    # and all of it goes to the winner: [[0, 5], [0, 0]], whatever the rule.
    x = torch.tensor([[[[1.0, 3.0], [2.0, -1.0]]]], dtype=DTYPE)
    relevance = lrpfn.lrp(
        nn.Sequential(nn.MaxPool2d(2)),
        x,
        Epsilon(0.0),
        output_relevance=torch.full((1, 1, 1, 1), 5.0, dtype=DTYPE),
    )
    expected = torch.tensor([[[[0.0, 5.0], [0.0, 0.0]]]], dtype=DTYPE)
    assert torch.equal(relevance, expected)


def test_average_pooling_with_epsilon() -> None:
    # One 2x2 window [[1, 3], [2, -2]]: z = (1 + 3 + 2 - 2) / 4 = 1, weights 1/4.
    # Epsilon(0.5), R = 3: s = R / (z + eps) = 3 / 1.5 = 2; R_i = a_i * (1/4) * s = a_i / 2
    # -> [[0.5, 1.5], [1, -1]], summing to 2 = R z / (z + eps) (eps absorbs the rest).
    x = torch.tensor([[[[1.0, 3.0], [2.0, -2.0]]]], dtype=DTYPE)
    relevance = lrpfn.lrp(
        nn.Sequential(nn.AvgPool2d(2)),
        x,
        Epsilon(0.5),
        output_relevance=torch.full((1, 1, 1, 1), 3.0, dtype=DTYPE),
    )
    expected = torch.tensor([[[[0.5, 1.5], [1.0, -1.0]]]], dtype=DTYPE)
    torch.testing.assert_close(relevance, expected)


def _two_layer_net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    net = net.to(DTYPE)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 2.0], [1.0, 1.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 3.0, -1.0]]))
    return net


def test_bias_free_relu_net_lrp0_by_hand() -> None:
    # x = (3, 1). Hidden z1 = W1 x = (3-1, -3+2, 3+1) = (2, -1, 4), h = relu(z1) = (2, 0, 4).
    # Output z2 = W2 h = 2 + 0 - 4 = -2; target 0 starts with R = z2 = -2.
    # Top layer, LRP-0: R_h = h * w2 / z2 * R = (2*1, 0*3, 4*(-1)) * (-2)/(-2) = (2, 0, -4).
    # The ReLU passes relevance. Bottom layer, LRP-0 per hidden unit j:
    #   j=1: contributions (3*1, 1*(-1)) = (3, -1), z = 2, R = 2  -> (3, -1)
    #   j=2: R = 0                                                   -> (0, 0)
    #   j=3: contributions (3*1, 1*1) = (3, 1),    z = 4, R = -4 -> (-3, -1)
    # R_x = (3 - 3, -1 - 1) = (0, -2), which sums to z2 = -2 (no bias: conserved).
    x = torch.tensor([[3.0, 1.0]], dtype=DTYPE)
    relevance = lrpfn.lrp(_two_layer_net(), x, Epsilon(0.0), target=0)
    torch.testing.assert_close(relevance, torch.tensor([[0.0, -2.0]], dtype=DTYPE))


def test_bias_free_relu_net_lrp0_equals_gradient_times_input() -> None:
    # For f(x) = W2 relu(W1 x) (no biases) with R = f(x) at the output:
    # top layer R_h,j = h_j w2_j (the denominators z2 cancel R = z2).
    # Bottom layer: R_x,i = sum_j x_i w1_ji / z1_j * R_h,j. For an active unit h_j = z1_j, so
    # the term is x_i w1_ji w2_j; an inactive unit has h_j = 0, so R_h,j = 0. Hence
    #   R_x,i = x_i * sum_j w2_j [z1_j > 0] w1_ji = x_i * df/dx_i,
    # gradient times input (Montavon et al. 2019, Sec. 10.2.1). Checked on random weights:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU(), nn.Linear(7, 1, bias=False))
    net = net.to(DTYPE)
    x = torch.randn(4, 5, dtype=DTYPE, requires_grad=True)
    (gradient,) = torch.autograd.grad(net(x).sum(), x)
    relevance = lrpfn.lrp(net, x.detach(), Epsilon(0.0), target=0)
    torch.testing.assert_close(relevance, x.detach() * gradient, rtol=1e-12, atol=1e-12)


def test_no_relevance_reaching_the_input_gives_zeros_shaped_like_it():
    """A handler that sends nothing back (here: the first layer's) leaves the input with no
    relevance at all; the result is then exactly zero, shaped like x (the walk has freed
    x's value by then, so the zeros must not be read from it)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    nothing_back = lrpfn.Handler("linear", lambda step: (None,), rule="required")
    first = model[0]
    table = {**lrpfn.HANDLERS, torch.nn.functional.linear: nothing_back}
    x = torch.randn(5, 3)
    relevance = lrpfn.lrp(model, x, lrpfn.rules.Epsilon(), handlers=table)
    assert relevance.shape == x.shape and not relevance.any()
    assert first.weight.shape == (4, 3)  # the model is untouched


class _TransposedAttribute(nn.Module):
    """Two dense layers with transposes between them, written as attributes (`h.mT`, `h.T`)
    or as calls: the same function, so the same relevance."""

    def __init__(self, as_attribute: bool) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 3), nn.Linear(5, 2)
        self.as_attribute = as_attribute

    def forward(self, x):
        h = self.first(x).relu()  # (batch, 5, 3)
        h = h.mT if self.as_attribute else h.transpose(-2, -1)  # (batch, 3, 5)
        h = self.second(h).sum(1)  # (batch, 2)
        return h.T.T if self.as_attribute else h.t().t()


def test_a_transpose_read_as_an_attribute_carries_relevance_like_the_call():
    torch.manual_seed(0)
    reference = _TransposedAttribute(False).double().eval()
    model = _TransposedAttribute(True).double().eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    expected = lrpfn.lrp(reference, x, Epsilon(1e-9))
    assert expected.abs().sum() > 0
    torch.testing.assert_close(lrpfn.lrp(model, x, Epsilon(1e-9)), expected, rtol=1e-12, atol=0)
