"""lrpfn is pure: explaining a model changes nothing, and concurrent calls do not interfere.

After any call (`lrp`, `relevances`, `prepare` and a `Plan` reused), with any rule or
preset: the model's parameters and buffers are bit-identical and were never written (their
version counters did not move), no hook of any kind is registered on a module or globally,
every module's plain attributes (`training`, `inplace`, `eps`, ...) and every parameter's
`requires_grad` are unchanged, no `.grad` was set, and the input tensor is untouched
(values, version counter, `requires_grad`, `.grad`). The test model has BatchNorms that
are folded and one that is not, and in-place ReLUs and additions, the cases where an
implementation is most tempted to write to the model or the input.
"""

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

import lrpfn
from lrpfn import composites, rules

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, and
# AlphaBeta(2, 1) doubles relevance where a layer has no negative part, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


class Block(nn.Module):
    """A residual block with folded BatchNorms, in-place ReLUs and an in-place addition."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return F.relu(out, inplace=True)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.block = Block(4)
        self.loose_bn = nn.BatchNorm2d(4)  # follows an addition: not folded
        self.avg = nn.AdaptiveAvgPool2d(2)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.stem(x))))
        x = self.avg(self.loose_bn(self.block(x)))
        return self.fc(self.drop(torch.flatten(x, 1)))


def make_net() -> nn.Module:
    torch.manual_seed(0)
    net = Net()
    for bn in (net.bn, net.block.bn1, net.block.bn2, net.loose_bn):  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.2, 0.2)
    return net.eval()


def make_input(requires_grad: bool = False) -> torch.Tensor:
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return x.requires_grad_(requires_grad)


RULES = {
    "epsilon": rules.Epsilon(1e-6),
    "lrp-0": rules.Epsilon(0.0),
    "gamma": rules.Gamma(0.25),
    "alpha2beta1": rules.AlphaBeta(2.0, 1.0),
    "zplus": rules.ZPlus(),
    "flat": rules.Flat(),
    "wsquare": rules.WSquare(),
    "gradient": rules.Gradient(),
    "key alpha1beta0": "alpha1beta0",
    "epsilon_plus": composites.epsilon_plus(),
    "epsilon_plus_flat": composites.epsilon_plus_flat(),
    "epsilon_gamma_box": composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "epsilon_alpha2_beta1_flat": composites.epsilon_alpha2_beta1_flat(),
}


def _hook_attributes(module: nn.Module) -> dict:
    """Every hook container of a module (`_forward_hooks`, `_forward_pre_hooks`,
    `_backward_hooks`, `_state_dict_hooks`, ...), copied."""
    return {
        name: dict(value) if isinstance(value, dict) else value
        for name, value in vars(module).items()
        if "hook" in name
    }


def _global_hooks() -> dict:
    """The global hook dicts of `torch.nn.modules.module` (`_global_forward_hooks`, ...)."""
    return {
        name: dict(value) if isinstance(value, dict) else value
        for name, value in vars(module_globals).items()
        if name.startswith("_global") and "hook" in name
    }


def _plain_attributes(module: nn.Module) -> dict:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, (bool, int, float, str, tuple, type(None)))
    }


def snapshot(model: nn.Module, x: torch.Tensor) -> dict:
    """Everything a pure call must leave as it was."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {
        "modules": {name: type(m) for name, m in model.named_modules()},
        "values": {name: t.detach().clone() for name, t in tensors.items()},
        "versions": {name: t._version for name, t in tensors.items()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: p.grad for name, p in model.named_parameters()},
        "attributes": {name: _plain_attributes(m) for name, m in model.named_modules()},
        "hooks": {name: _hook_attributes(m) for name, m in model.named_modules()},
        "global_hooks": _global_hooks(),
        "module_call": (nn.Module.__call__, nn.Module.__getattr__),  # torch.fx patches these
        "grad_enabled": torch.is_grad_enabled(),
        "x": (x.detach().clone(), x._version, x.requires_grad, x.grad, x.dtype, x.shape),
    }


def assert_unchanged(before: dict, model: nn.Module, x: torch.Tensor) -> None:
    after = snapshot(model, x)
    assert after["modules"] == before["modules"]
    for name, value in before["values"].items():
        assert torch.equal(after["values"][name], value), f"{name} changed"
    assert after["versions"] == before["versions"], "a parameter or buffer was written"
    assert after["requires_grad"] == before["requires_grad"]
    assert all(grad is None for grad in after["grads"].values()), ".grad was set"
    assert after["attributes"] == before["attributes"]
    assert after["hooks"] == before["hooks"]
    assert after["global_hooks"] == before["global_hooks"]
    assert after["module_call"] == before["module_call"]
    assert after["grad_enabled"] == before["grad_enabled"]
    values, version, requires_grad, grad, dtype, shape = before["x"]
    assert torch.equal(x.detach(), values), "the input was modified"
    assert x._version == version, "the input was written in place"
    assert (x.requires_grad, x.grad, x.dtype, x.shape) == (requires_grad, grad, dtype, shape)


def _calls():
    """Each entry point, as a function (model, x, rule) -> result."""
    return {
        "lrp": lambda m, x, r: lrpfn.lrp(m, x, r),
        "lrp target": lambda m, x, r: lrpfn.lrp(m, x, r, target=torch.tensor([0, 1, 4])),
        "lrp k targets": lambda m, x, r: lrpfn.lrp(m, x, r, target=torch.tensor([[0, 1]] * 3)),
        "lrp output_relevance": lambda m, x, r: lrpfn.lrp(
            m, x, r, output_relevance=torch.ones(3, 5)
        ),
        "relevances": lambda m, x, r: lrpfn.relevances(m, x, r),
        "prepare, lrp(plan) twice": lambda m, x, r: [lrpfn.lrp(lrpfn.prepare(m, r), x)] * 2,
    }


@pytest.mark.parametrize("rule", list(RULES.values()), ids=list(RULES))
def test_lrp_leaves_model_and_input_untouched(rule):
    model, x = make_net(), make_input()
    before = snapshot(model, x)
    rule_repr = repr(rule)
    first = lrpfn.lrp(model, x, rule)
    assert_unchanged(before, model, x)
    assert repr(rule) == rule_repr  # rules are values: nothing stored on them
    second = lrpfn.lrp(model, x, rule)
    assert torch.equal(first, second)  # no hidden state from one call to the next
    assert torch.isfinite(first).all()


@pytest.mark.parametrize("call", list(_calls().values()), ids=list(_calls()))
@pytest.mark.parametrize("rule_name", ["epsilon", "alpha2beta1", "epsilon_gamma_box"])
def test_every_entry_point_leaves_model_and_input_untouched(call, rule_name):
    model, x = make_net(), make_input()
    before = snapshot(model, x)
    call(model, x, RULES[rule_name])
    assert_unchanged(before, model, x)


def test_input_requiring_grad_keeps_its_flag_and_gets_no_grad():
    model, x = make_net(), make_input(requires_grad=True)
    before = snapshot(model, x)
    result = lrpfn.lrp(model, x, composites.epsilon_plus())
    assert_unchanged(before, model, x)
    assert x.requires_grad and x.grad is None
    assert not result.requires_grad  # the explanation is not part of the user's graph


def test_frozen_and_trainable_parameters_keep_their_flags():
    model, x = make_net(), make_input()
    model.stem.weight.requires_grad_(False)
    model.block.bn1.requires_grad_(False)
    before = snapshot(model, x)
    lrpfn.relevances(model, x, rules.Gamma(0.25))
    assert_unchanged(before, model, x)
    assert not model.stem.weight.requires_grad and model.fc.weight.requires_grad


def test_model_in_training_mode_is_not_switched_to_eval():
    """lrpfn refuses a BatchNorm in training mode (TrainingModeError) and changes nothing."""
    model, x = make_net(), make_input()
    model.train()
    before = snapshot(model, x)
    with pytest.raises(lrpfn.errors.TrainingModeError):
        lrpfn.lrp(model, x, rules.Epsilon())
    assert_unchanged(before, model, x)
    assert all(module.training for module in model.modules())


def test_user_hooks_stay_registered_and_leaf_hooks_do_not_fire():
    """Hooks the user registered stay registered, and lrpfn's forward pass does not fire
    the hooks of layers: it runs the captured graph, not the modules. (Tracing calls
    container modules once with `torch.fx` proxies, so their hooks do run then.)"""
    model, x = make_net(), make_input()
    fired = []
    handles = [
        model.fc.register_forward_hook(lambda *args: fired.append("fc")),
        model.fc.register_forward_pre_hook(lambda *args: fired.append("fc pre")),
        model.stem.register_forward_hook(lambda *args: fired.append("stem")),
        model.block.register_forward_pre_hook(lambda *args: None),
    ]
    before = snapshot(model, x)
    lrpfn.lrp(model, x, composites.epsilon_alpha2_beta1_flat())
    assert_unchanged(before, model, x)
    assert fired == []
    model(x)
    assert fired == ["stem", "fc pre", "fc"]
    for handle in handles:
        handle.remove()


def test_plan_does_not_alias_mutable_model_state():
    """A Plan reads the model's parameters at call time only through its own graph module:
    the folded BatchNorm parameters are copies, so changing the model afterwards leaves an
    existing plan's folded layers as they were prepared."""
    model, x = make_net(), make_input()
    plan = lrpfn.prepare(model, rules.Epsilon())
    expected = lrpfn.lrp(plan, x)
    with torch.no_grad():
        model.bn.running_var.mul_(4.0)  # changes the folded stem only
    assert torch.equal(lrpfn.lrp(plan, x), expected)
    assert not torch.equal(lrpfn.lrp(model, x, rules.Epsilon()), expected)


# --- concurrency -------------------------------------------------------------------------

THREAD_RULES = [
    rules.Epsilon(0.1),
    rules.Gamma(0.25),
    rules.AlphaBeta(2.0, 1.0),
    composites.epsilon_plus_flat(),
]


@pytest.fixture
def frequent_thread_switches():
    """Switch threads every 10 microseconds (default 5 ms), so that any shared state
    between concurrent calls shows up within a few calls."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def _concurrently(function, arguments, rounds: int) -> list[list]:
    results = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(rounds):
            results.append(list(pool.map(function, arguments)))
    return results


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_calls_on_plans_equal_sequential_calls():
    """Plans are immutable values: four threads, each explaining with a different rule
    through its own prepared Plan (`lrp` and `relevances`), give bit-identical results to
    sequential calls."""
    model, x = make_net(), make_input()
    before = snapshot(model, x)
    plans = [lrpfn.prepare(model, rule) for rule in THREAD_RULES]
    sequential = [lrpfn.lrp(plan, x) for plan in plans]
    for results in _concurrently(lambda plan: lrpfn.lrp(plan, x), plans, rounds=5):
        for result, expected in zip(results, sequential, strict=True):
            assert torch.equal(result, expected)
    every = [lrpfn.relevances(plan, x) for plan in plans]
    for results in _concurrently(lambda plan: lrpfn.relevances(plan, x), plans, rounds=2):
        for result, expected in zip(results, every, strict=True):
            assert result.keys() == expected.keys()
            assert all(torch.equal(result[name], expected[name]) for name in expected)
    assert_unchanged(before, model, x)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_calls_on_a_traced_graph_module_equal_sequential_calls():
    """With the model traced once (`torch.fx.symbolic_trace`), four threads each preparing
    and running a different rule (canonicalisation, rule resolution, forward and reverse
    walk all concurrent) give bit-identical results to sequential calls."""
    model, x = make_net(), make_input()
    traced = torch.fx.symbolic_trace(model)
    before = snapshot(model, x)
    sequential = [lrpfn.lrp(model, x, rule) for rule in THREAD_RULES]
    calls = _concurrently(lambda rule: lrpfn.lrp(traced, x, rule), THREAD_RULES, rounds=5)
    for results in calls:
        for result, expected in zip(results, sequential, strict=True):
            assert torch.equal(result, expected)
    assert_unchanged(before, model, x)


# Run in a subprocess: the race corrupts torch for the whole process (torch.fx's tracer
# patches nn.Module.__call__ and __getattr__ globally, and interleaved traces can leave the
# patch of a finished trace in place), so it must not touch the test session's interpreter.
_BARE_MODULE_RACE = """
import sys
from concurrent.futures import ThreadPoolExecutor
import torch
import lrpfn
from tests.test_purity import THREAD_RULES, make_input, make_net

sys.setswitchinterval(1e-6)
model, x = make_net(), make_input()
original = (torch.nn.Module.__call__, torch.nn.Module.__getattr__)
sequential = [lrpfn.lrp(model, x, rule) for rule in THREAD_RULES]
problems = []
with ThreadPoolExecutor(max_workers=4) as pool:
    for _ in range(30):
        futures = [pool.submit(lrpfn.lrp, model, x, rule) for rule in THREAD_RULES]
        for future, expected in zip(futures, sequential):
            try:
                if not torch.equal(future.result(), expected):
                    problems.append("a result differs from the sequential one")
            except Exception as error:
                problems.append(f"{type(error).__name__}: {str(error)[:200]}")
        if (torch.nn.Module.__call__, torch.nn.Module.__getattr__) != original:
            problems.append("torch.nn.Module.__call__ / __getattr__ left patched by torch.fx")
        if problems:
            break
print("\\n".join(problems) if problems else "OK")
"""


def test_concurrent_calls_on_a_bare_module_equal_sequential_calls():
    """Four threads, each calling `lrp(model, x, rule)` with a different rule on the same
    untraced module, give the sequential results and leave torch as it was."""
    completed = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(_BARE_MODULE_RACE)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:  # the harness itself failed: not the xfail's reason
        raise RuntimeError(completed.stderr[-2000:])
    assert completed.stdout.strip() == "OK"
