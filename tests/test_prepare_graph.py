"""The graph `prepare` makes: named after the user's trace, and nothing else changes.

`prepare` edits its own fresh trace in place, and a copy of a `GraphModule` the user
passes in; either way the plan's nodes carry the names of `torch.fx.symbolic_trace`'s
nodes (lowered layers and affine batch norms keep their names, folded batch norms are
gone), and the user's GraphModule, its graph and its attributes are as they were.
"""

import pytest
import torch
from torch import fx, nn

import lrpfn
from lrpfn import rules

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# unseeded toy nets have biases, which can add relevance as well as absorb it, so sums
# past 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


class Block(nn.Module):
    """conv - folded batch norm - in-place relu, a batch norm after a sum (made affine),
    a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.after_sum = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = self.relu(self.norm(self.conv(x)))
        h = self.after_sum(h + h)
        return self.head(torch.flatten(h, 1))


def _model():
    torch.manual_seed(0)
    model = Block().double().eval()
    with torch.no_grad():
        for norm in (model.norm, model.after_sum):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    return model


X = torch.randn(2, 3, 6, 6, dtype=torch.float64)


def _names(graph: fx.Graph) -> list[str]:
    return [node.name for node in graph.nodes]


def test_plan_nodes_carry_the_trace_names_less_the_folded_batch_norm():
    model = _model()
    traced = _names(fx.symbolic_trace(model).graph)
    plan = lrpfn.prepare(model, rules.Epsilon())
    data = [name for name in _names(plan.module.graph) if name in traced]
    assert data == [name for name in traced if name != "norm"]
    assert set(lrpfn.relevances(plan, X)) >= {"conv", "relu", "after_sum", "head", "x"}


def test_a_users_graph_module_is_unchanged_and_explained_like_the_model():
    model = _model()
    traced = fx.symbolic_trace(model)
    graph_text, names, code = str(traced.graph), _names(traced.graph), traced.code
    attributes = dict(traced.__dict__)
    buffers = {name: value.clone() for name, value in traced.named_buffers()}
    from_graph = lrpfn.prepare(traced, rules.Epsilon())
    assert str(traced.graph) == graph_text and _names(traced.graph) == names
    assert traced.code == code and traced.__dict__ == attributes
    assert all(torch.equal(value, buffers[name]) for name, value in traced.named_buffers())
    from_model = lrpfn.prepare(model, rules.Epsilon())
    assert _names(from_graph.module.graph) == _names(from_model.module.graph)
    torch.testing.assert_close(
        lrpfn.lrp(from_graph, X, target=1), lrpfn.lrp(from_model, X, target=1), rtol=0, atol=0
    )


def test_a_second_prepare_leaves_the_first_plan_as_it_was():
    model = _model()
    first = lrpfn.prepare(model, rules.Epsilon())
    names, expected = _names(first.module.graph), lrpfn.lrp(first, X, target=2)
    second = lrpfn.prepare(model, rules.Epsilon())
    assert second.module is not first.module and second.module.graph is not first.module.graph
    assert _names(first.module.graph) == names
    assert torch.equal(lrpfn.lrp(first, X, target=2), expected)
    assert torch.equal(lrpfn.lrp(second, X, target=2), expected)
