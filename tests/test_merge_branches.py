"""The canonical pass that merges parallel linear branches of one input (issue 22).

A sum of convolutions, per-channel affine maps and the identity of one input is one
convolution; the merged graph must compute the same output, give the relevance of that one
convolution, and make re-parameterisable timm nets (RepVGG, MobileOne) explain like other
CNNs. References: the Jacobian of the block (autograd, float64) and timm's own
`reparameterize_model`.
"""

import copy
import operator
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.engine import model_output
from lrpfn.errors import ConservationWarning

DTYPE = torch.float64


class RepBlock(nn.Module):
    """3x3 + 1x1 convolutions (grouped), a BatchNorm of x and x itself, summed as timm
    does: through an identity module and `0 + ...`."""

    def __init__(self, channels: int = 4, groups: int = 2, stride: int = 1) -> None:
        super().__init__()
        self.kxk = nn.Conv2d(channels, channels, 3, stride, 1, groups=groups)
        self.pointwise = nn.Conv2d(channels, channels, 1, stride, 0, groups=groups)
        self.identity = nn.BatchNorm2d(channels)
        self.drop_path = nn.Identity()
        self.stride = stride

    def forward(self, x):
        out = 0 + self.kxk(x)
        out = out + self.pointwise(x)
        out = self.drop_path(out)
        if self.stride == 1:
            out = out + self.identity(x) + x
        return out


def rep_block(**options) -> nn.Module:
    torch.manual_seed(0)
    block = RepBlock(**options)
    with torch.no_grad():
        block.identity.running_mean.normal_()
        block.identity.running_var.uniform_(0.5, 2.0)
        block.identity.weight.normal_()
        block.identity.bias.normal_()
    return block.eval().to(DTYPE)


def ops_of(plan) -> list:
    return [node.target for node in plan.module.graph.nodes if node.op == "call_function"]


def test_the_branches_become_one_convolution_with_the_same_output():
    block, x = rep_block(), torch.randn(2, 4, 6, 6, dtype=DTYPE)
    plan = lrpfn.prepare(block, rules.Epsilon(0.0))
    assert ops_of(plan) == [F.conv2d]  # no add, no channel_affine left
    torch.testing.assert_close(model_output(plan, x), block(x), rtol=1e-12, atol=1e-12)


def test_the_merged_relevance_is_lrp0_of_the_blocks_jacobian():
    # The block is affine, y = J x + b: LRP-0 gives R_i = x_i sum_j J_ji R_j / y_j with
    # R = y * onehot(target); J comes from autograd, independently of the merged kernel.
    block, x = rep_block(), torch.randn(1, 4, 5, 5, dtype=DTYPE)
    y = block(x).detach()
    relevance_out = torch.zeros_like(y)
    relevance_out[0, 1] = y[0, 1]  # explain every position of channel 1
    jacobian = torch.autograd.functional.jacobian(block, x).reshape(y.numel(), x.numel())
    expected = x.flatten() * (jacobian.T @ (relevance_out.flatten() / y.flatten()))
    actual = lrpfn.lrp(block, x, rules.Epsilon(0.0), output_relevance=relevance_out)
    torch.testing.assert_close(actual.flatten(), expected, rtol=1e-10, atol=1e-12)


def test_branches_of_different_strides_or_inputs_are_left_alone():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 3, 1, 1)
            self.b = nn.Conv2d(3, 3, 3, 2, 1)
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            strided = F.interpolate(self.b(x), scale_factor=2.0)
            return self.a(x) + strided + self.c(torch.relu(x))

    plan = lrpfn.prepare(Mixed().eval(), rules.Epsilon())
    assert ops_of(plan).count(operator.add) == 2


TIMM_NETS = ["repvgg_a0", "repvgg_a1", "mobileone_s0", "mobileone_s1"]


@pytest.fixture(scope="module", params=TIMM_NETS)
def timm_net(request):
    timm = pytest.importorskip("timm")
    from timm.utils.model import reparameterize_model

    torch.manual_seed(0)
    model = timm.create_model(request.param, pretrained=False, num_classes=10).eval()
    return request.param, model, reparameterize_model


def test_timm_reparameterisable_nets_explain_as_their_reparameterised_form(timm_net):
    _, model, reparameterize_model = timm_net
    model = copy.deepcopy(model).to(DTYPE)
    merged = reparameterize_model(copy.deepcopy(model))  # timm's own merge, in float64
    x = torch.randn(2, 3, 32, 32, dtype=DTYPE).clamp(-3, 3)
    mapping = composites.epsilon_plus(epsilon=0.0, stabilizer=0.0)
    ours, theirs = lrpfn.lrp(model, x, mapping), lrpfn.lrp(merged, x, mapping)
    assert (ours - theirs).abs().max() <= 1e-10 * theirs.abs().max()


@pytest.mark.parametrize("preset", ["epsilon_gamma_box", "epsilon_plus", "epsilon_plus_flat"])
def test_timm_reparameterisable_nets_conserve_under_the_presets(timm_net, preset):
    name, model, _ = timm_net
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32).clamp(-3, 3)
    mapping = (
        composites.epsilon_gamma_box(low=-3, high=3)
        if preset == "epsilon_gamma_box"
        else composites.PRESETS[preset]()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConservationWarning)  # relevance never grows past 2x
        relevance = lrpfn.lrp(model, x, mapping)
    with torch.no_grad():
        logit = model(x).max(1).values
    ratio = relevance.double().flatten(1).sum(1) / logit.double()
    assert torch.isfinite(relevance).all()
    assert (ratio <= 2).all() and (ratio >= -2).all(), (name, ratio)
