"""Capture: fx first, torch.export where fx fails; purity; models as users hold them.

- A model with shape-dependent Python (TF "same" padding computed with `math.ceil`, an
  `if` on `x.shape`) is captured by `torch.export` at the input's shape and explained
  exactly like the same computation written without the shape code (traced by fx).
- Capture leaves every attribute of every module as it was, including caches filled
  during forward (timm's LeViT), and a model holding a proxy of an earlier trace is a
  named error, not a `KeyError` from deep inside.
- The offending line of a failure is found when the user's code lives under a path
  containing "lrpfn" (a virtual environment named after the project).
- `torch.compile`, `DataParallel` and `DistributedDataParallel` wrappers are explained
  as the module they wrap; mapping outputs explain their "logits"; targets may be NumPy
  integers and lists; a TorchScript module is refused with what to pass instead.
"""

from __future__ import annotations

import importlib.util
import math
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import InvalidInputError, TraceError

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, and
# AlphaBeta(2, 1) doubles relevance where a layer has no negative part, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

X = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(0))


class SamePadding(nn.Module):
    """TF "same" padding computed in Python from the input's shape, and a shape branch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        height, width = x.shape[-2:]
        pad_h = max((math.ceil(height / 2) - 1) * 2 + 3 - height, 0)
        pad_w = max((math.ceil(width / 2) - 1) * 2 + 3 - width, 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        x = torch.relu(self.bn(self.conv(x)))
        if x.shape[-1] > 2:  # shape-dependent Python: fx cannot trace it
            x = x[:, :, 1:-1, 1:-1]
        return self.fc(x.mean((2, 3)))


class SamePaddingWritten(SamePadding):
    """The same computation at X's shape (9 x 9: pad 1 on each side), without shape code."""

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(F.pad(x, [1, 1, 1, 1]))))
        return self.fc(x[:, :, 1:-1, 1:-1].mean((2, 3)))


def test_fx_failure_falls_back_to_export_and_explains_like_the_written_out_model():
    model, written = SamePadding().eval(), SamePaddingWritten().eval()
    with pytest.raises(Exception):  # noqa: B017 (fx itself refuses the shape code)
        fx.symbolic_trace(model)
    plan = lrpfn.prepare(model, composites.epsilon_plus(), example_input=X)
    assert (plan.front_end, plan.input_shape) == ("export", tuple(X.shape))
    assert "front_end='export'" in repr(plan)
    reference_plan = lrpfn.prepare(written, composites.epsilon_plus())
    assert reference_plan.front_end == "fx"
    torch.testing.assert_close(plan.module(X), model(X))
    for rule in (composites.epsilon_plus(), rules.Epsilon(0.0), rules.Gamma(0.25)):
        torch.testing.assert_close(
            lrpfn.lrp(model, X, rule, target=3), lrpfn.lrp(written, X, rule, target=3)
        )


def test_export_graph_has_torch_level_ops_and_module_sources_for_rules_by_type():
    plan = lrpfn.prepare(SamePadding().eval(), rules.Epsilon(), example_input=X)
    targets = {node.target for node in plan.module.graph.nodes if node.op == "call_function"}
    assert F.conv2d in targets and F.linear in targets and torch.relu in targets
    assert not any(isinstance(t, torch._ops.OpOverload) for t in targets)
    assert F.batch_norm not in targets  # folded into the convolution, as the module form
    # rules keyed by module type and by module name match the exported nodes
    keyed = {nn.Conv2d: rules.ZPlus(), "fc": rules.Epsilon(0.5)}
    plan = lrpfn.prepare(SamePadding().eval(), keyed, example_input=X)
    conv = next(node for node in plan.module.graph.nodes if node.target is F.conv2d)
    linear = next(node for node in plan.module.graph.nodes if node.target is F.linear)
    assert isinstance(plan.rules[conv.name], rules.ZPlus)
    assert plan.rules[linear.name] == rules.Epsilon(0.5)


def test_an_export_plan_refuses_inputs_of_another_shape():
    plan = lrpfn.prepare(SamePadding().eval(), rules.Epsilon(), example_input=X)
    with pytest.raises(InvalidInputError, match=r"captured by torch\.export at input shape"):
        lrpfn.lrp(plan, torch.randn(1, 3, 11, 11))


# --- purity ------------------------------------------------------------------------------


class CachingAttention(nn.Module):
    """Caches a parameter-derived tensor per device during forward (timm's LeViT)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(4) + 0.5)
        self.cache: dict[str, torch.Tensor] = {}
        self.calls: list[int] = []

    def get_scale(self, device):
        key = str(device)
        if key not in self.cache:
            self.cache[key] = self.scale.reshape(1, -1, 1, 1) * 1.0
        return self.cache[key]

    def forward(self, x):
        self.calls.append(1)
        return x * self.get_scale(x.device)


class CachingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.attention = CachingAttention()
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.attention(self.conv(x)).mean((2, 3)))


def _attributes(model: nn.Module) -> list:
    """Every module attribute by identity, with the items of containers."""
    return [
        (name, key, id(value), [id(v) for v in value.values()] if isinstance(value, dict) else
         [id(v) for v in value] if isinstance(value, (list, set)) else None)
        for name, module in model.named_modules()
        for key, value in sorted(module.__dict__.items())
    ]  # fmt: skip


def test_capture_leaves_every_module_attribute_as_it_was_including_caches():
    model = CachingNet().eval()
    before = _attributes(model)
    first = lrpfn.lrp(model, X, rules.Epsilon(), target=1)
    assert _attributes(model) == before  # the cache holds no fx Proxy, calls were undone
    assert model.attention.cache == {} and model.attention.calls == []
    second = lrpfn.lrp(model, X, rules.Epsilon(), target=1)  # and the next call works
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_a_proxy_left_in_a_module_by_an_earlier_trace_is_a_named_error():
    model = CachingNet().eval()
    fx.symbolic_trace(model)  # plain fx leaves its Proxy in the cache
    assert any(isinstance(v, fx.Proxy) for v in model.attention.cache.values())
    with pytest.raises(
        TraceError,
        match=r"'attention' \(CachingAttention\) holds a torch\.fx Proxy in its attribute 'cache'",
    ):
        lrpfn.lrp(model, X, rules.Epsilon(), target=1)


def test_offending_line_is_found_under_a_path_containing_lrpfn(tmp_path):
    """A project virtual environment named after lrpfn holds the user's code: the
    frame filter compares real package directories, not a path substring."""
    folder = tmp_path / "lrpfn-venv" / "site"
    folder.mkdir(parents=True)
    source = folder / "usermodel.py"
    source.write_text(
        textwrap.dedent(
            """
            import torch

            class UserModel(torch.nn.Module):
                def forward(self, x):
                    if x.sum() > 0:  # the user's offending line
                        return x
                    return -x
            """
        )
    )
    spec = importlib.util.spec_from_file_location("usermodel", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(TraceError) as caught:
        lrpfn.lrp(module.UserModel(), torch.randn(2, 4), rules.Epsilon(), target=0)
    message = str(caught.value)
    assert f"Offending line ({source}:6)" in message
    assert "if x.sum() > 0:  # the user's offending line" in message


# --- models as users hold them -----------------------------------------------------------


def _model():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 5)
    ).eval()


def test_compiled_module_is_explained_as_the_module_it_wraps():
    model = _model()
    compiled = torch.compile(model)
    assert type(compiled).__name__ == "OptimizedModule"
    torch.testing.assert_close(
        lrpfn.lrp(compiled, X, rules.Epsilon(), target=2),
        lrpfn.lrp(model, X, rules.Epsilon(), target=2),
        rtol=0,
        atol=0,
    )


def test_data_parallel_is_explained_as_the_module_it_wraps():
    model = _model()
    torch.testing.assert_close(
        lrpfn.lrp(nn.DataParallel(model), X, rules.Epsilon(), target=2),
        lrpfn.lrp(model, X, rules.Epsilon(), target=2),
        rtol=0,
        atol=0,
    )


def test_distributed_data_parallel_is_explained_as_the_module_it_wraps(tmp_path):
    import torch.distributed as dist

    model = _model()
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        result = lrpfn.lrp(wrapped, X, rules.Epsilon(), target=2)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(
        result, lrpfn.lrp(model, X, rules.Epsilon(), target=2), rtol=0, atol=0
    )


def test_torchscript_module_is_a_named_error_saying_what_to_pass():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated
        scripted = torch.jit.script(_model())
    with pytest.raises(TraceError, match=r"TorchScript module.*pass the original nn\.Module"):
        lrpfn.lrp(scripted, X, rules.Epsilon(), target=2)


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _model()

    def forward(self, x):
        logits = self.body(x)
        return {"features": logits * 2, "logits": logits}


def test_mapping_output_explains_its_logits_and_says_so():
    model = DictOutput().eval()
    with pytest.warns(UserWarning, match="returns a mapping; lrpfn explains its 'logits'"):
        plan = lrpfn.prepare(model, rules.Epsilon())
    assert plan.output_key == "logits"
    torch.testing.assert_close(
        lrpfn.lrp(plan, X, target=2), lrpfn.lrp(model.body, X, rules.Epsilon(), target=2)
    )


def test_hugging_face_model_output_explains_its_logits():
    outputs = pytest.importorskip("transformers.modeling_outputs", reason="transformers absent")

    class HFStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _model()

        def forward(self, x):
            return outputs.SequenceClassifierOutput(logits=self.body(x))

    model = HFStyle().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = lrpfn.prepare(model, rules.Epsilon(), example_input=X)
    assert plan.output_key == "logits"
    assert any("lrpfn explains its 'logits'" in str(w.message) for w in caught)
    torch.testing.assert_close(
        lrpfn.lrp(plan, X, target=1), lrpfn.lrp(model.body, X, rules.Epsilon(), target=1)
    )


@pytest.mark.parametrize(
    "target",
    [np.int64(3), np.int32(3), [3, 3], np.array([3, 3]), (3, 3)],
    ids=["np.int64", "np.int32", "list", "np.array", "tuple"],
)
def test_targets_as_numpy_integers_and_lists(target):
    model = _model()
    expected = lrpfn.lrp(model, X, rules.Epsilon(), target=3)
    torch.testing.assert_close(lrpfn.lrp(model, X, rules.Epsilon(), target=target), expected)


def test_list_target_of_floats_is_refused():
    with pytest.raises(lrpfn.errors.InvalidTargetError, match="integer class indices"):
        lrpfn.lrp(_model(), X, rules.Epsilon(), target=[0.5, 1.0])


def test_a_users_graph_module_with_a_mapping_output_is_not_changed():
    model = DictOutput().eval()
    traced = fx.symbolic_trace(model)
    code = traced.code
    with pytest.warns(UserWarning, match="'logits'"):
        relevance = lrpfn.lrp(traced, X, rules.Epsilon(), target=0)
    assert traced.code == code and isinstance(traced(X), dict)
    torch.testing.assert_close(relevance, lrpfn.lrp(model.body, X, rules.Epsilon(), target=0))


class AttentionOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x):  # (batch, tokens, 4)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(torch.bmm(q, k.transpose(1, 2)), dim=-1)
        mixed = torch.matmul(weights.masked_fill(weights < 0, 0.0), v)
        fused = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return torch.einsum("btd,btd->bd", mixed, fused)


def test_export_maps_the_aten_attention_ops_to_torch_level_callables():
    from lrpfn.capture.export import export_graph

    gm = export_graph(AttentionOps().eval(), torch.randn(2, 3, 4))
    targets = {node.target for node in gm.graph.nodes if node.op == "call_function"}
    expected = {F.linear, torch.softmax, torch.bmm, torch.matmul, torch.masked_fill,
                F.scaled_dot_product_attention, torch.einsum}  # fmt: skip
    assert expected <= targets
    assert not any(isinstance(t, torch._ops.OpOverload) for t in targets)
    assert not any(node.op == "call_module" for node in gm.graph.nodes)  # no _guards_fn


def test_shape_queries_of_an_exported_graph_are_non_data_nodes():
    """`aten.sym_size` (what export emits for a dynamic dimension) carries no relevance."""
    torch.manual_seed(2)
    linear = nn.Linear(6, 2)
    graph = fx.Graph()
    x = graph.placeholder("x")
    size = graph.call_function(torch.ops.aten.sym_size.int, (x, 0))
    flat = graph.call_function(torch.reshape, (x, (size, -1)))
    graph.output(
        graph.call_function(F.linear, (flat, graph.get_attr("weight"), graph.get_attr("bias")))
    )
    root = nn.Module()
    root.weight, root.bias = linear.weight, linear.bias
    gm = fx.GraphModule(root, graph)
    x_value = torch.randn(3, 2, 3)
    expected = lrpfn.lrp(linear, x_value.reshape(3, -1), rules.Epsilon(), target=1)
    torch.testing.assert_close(
        lrpfn.lrp(gm, x_value, rules.Epsilon(), target=1), expected.reshape(3, 2, 3)
    )


def test_a_size_query_used_as_an_argument_is_kept_for_the_backward_walk():
    class SizeView(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(x.view(x.size(0), -1))

    model, x = SizeView().eval(), torch.randn(3, 2, 3)
    expected = lrpfn.lrp(model.fc, x.reshape(3, -1), rules.Epsilon(), target=1)
    torch.testing.assert_close(
        lrpfn.lrp(model, x, rules.Epsilon(), target=1), expected.reshape(3, 2, 3)
    )


class WritesInForward(nn.Module):
    """ConViT's pattern: an index tensor built by in-place writes into a fresh tensor, and a
    buffer reassigned in forward when the input's size changes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("positions", torch.zeros(1, 1, 1), persistent=False)

    def forward(self, x):  # (batch, tokens, 4)
        tokens = x.shape[1]
        if self.positions.shape[1] != tokens:  # shape-dependent: fx fails, export captures
            positions = torch.zeros(1, tokens, 1)
            positions[:, :, 0] = torch.arange(tokens).float() / tokens
            self.positions = positions
        return self.fc(x + self.positions).mean(1)


def test_in_place_writes_into_fresh_tensors_are_kept_and_the_models_buffers_untouched():
    model, x = WritesInForward().eval(), torch.randn(2, 5, 4)
    plan = lrpfn.prepare(model, rules.Epsilon(), example_input=x)
    assert plan.front_end == "export"
    assert model.positions.shape == (1, 1, 1) and not model.positions.any()  # restored
    with torch.no_grad():
        captured, expected = plan.module(x), model(x)
    torch.testing.assert_close(captured, expected, rtol=0, atol=0)  # the writes happened
    assert model.positions.shape == (1, 5, 1)  # the model's own forward reassigned it
