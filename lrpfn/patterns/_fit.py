"""`fit`: stream over data once and estimate the pattern of every dense and convolution node.

The model is captured and canonicalized exactly as for explaining it (`lrpfn.prepare`), so
the patterns are keyed by the node names the rules see and fit the weights the rules see
(BatchNorm folded into the layer before it). A `torch.fx.Interpreter` runs the canonical
graph batch by batch; at each dense or convolution node it adds the batch's moments
(`_estimators.batch_moments`) to running float64 sums and keeps nothing else, so memory
does not depend on the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx
from tqdm import tqdm

from ..engine import TRACE_LOCK, padded_convolution, prepare
from ..errors import InvalidInputError, InvalidRuleError
from ..rules import Gradient
from ._estimators import MEAN_Y, Moments, add_moments, batch_moments, estimate
from ._value import Patterns

__all__ = ["KINDS", "fit"]

KINDS = ("linear", "positive")
_CHANNEL_AXIS = {F.linear: -1, F.conv1d: 1, F.conv2d: 1, F.conv3d: 1, padded_convolution: 1}


def fit(
    model: torch.nn.Module,
    data: Iterable[Any],
    kind: Literal["linear", "positive"] = "linear",
    *,
    mean_y: Literal["regime", "all"] = "regime",
    progress: bool = True,
    handlers: Mapping[Any, Any] | None = None,
) -> Patterns:
    r"""Estimate the patterns of `model` over `data` in one pass.

    Fits every dense (`nn.Linear`, `F.linear`) and convolution (`nn.Conv1d/2d/3d`, any
    stride, padding, dilation and groups) node of the canonical graph; transposed
    convolutions and unfolded BatchNorms get no pattern. For neuron $o$ with weight row
    $w$, input (patch) $x$ and $y = w^\top x$, over every sample and output position:

    - `kind="linear"`: $a = \mathrm{cov}[x, y] / (w^\top \mathrm{cov}[x, y])$;
    - `kind="positive"`: $a_+ = c_+ / (w^\top c_+)$, $c_+ = E_+[xy] - E_+[x]\,\bar y$, with
      $E_+$ over the observations where the node's output (bias included) is positive.

    `mean_y` chooses $\bar y$. lrpfn's default, "regime", is $E_+[y]$: then $a_+$ is the
    linear estimator of the positive regime's observations alone, as the two-component
    model treats the regimes as separate populations, and the denominator is
    $\mathrm{var}_+[y] \ge 0$. "all" is $E[y]$ over all observations, the paper's formula
    as printed and what iNNvestigate and TorchLRP compute; there the observations the ReLU
    discards still move $a_+$. Neurons that never activate, or whose $y$ never varies,
    get a zero pattern (never NaN). Details: `lrpfn.patterns._estimators`.

    Per batch and node, $\sum x$ and $\sum x y$ over the regime (mask $m$) are the
    layer's vector-Jacobian products with respect to its weight at the cotangents $m$
    and $m y$; `torch.func.vmap` evaluates both in one call (vmapped over the cotangents).
    Nothing but float64 running sums survives a batch.

    Arguments:
        model: an `nn.Module` or `torch.fx.GraphModule` in eval mode (never modified).
        data: any iterable of input batches: tensors, or tuples/lists whose first item is
            the input batch (`(x, label)` pairs, a `DataLoader`). Each batch is moved to
            the device and floating dtype of the model's parameters.
        kind: "linear" ($S_a$) or "positive" (the $a_+$ of the two-component $S_{a+-}$).
        mean_y: for `kind="positive"`, $\bar y = E_+[y]$ ("regime", default) or $E[y]$
            over all observations ("all", as iNNvestigate and TorchLRP).
        progress: show a tqdm progress bar over the batches.
        handlers: passed to `lrpfn.prepare` (for models with custom modules).

    Returns:
        A `Patterns` value with one float64 tensor per node, shaped like its weight.

    Raises:
        InvalidRuleError: unknown `kind` or `mean_y`.
        InvalidInputError: `data` yields no batch, a batch that is not a floating tensor,
            or a non-finite value; the model has no dense or convolution node.
    """
    if kind not in KINDS:
        raise InvalidRuleError(f"kind must be one of {KINDS}, got {kind!r}.")
    if mean_y not in MEAN_Y:
        raise InvalidRuleError(f"mean_y must be one of {MEAN_Y}, got {mean_y!r}.")
    plan = prepare(model, Gradient(), handlers)
    nodes = {
        node.name: node
        for node in plan.module.graph.nodes
        if node.name in plan.rules and node.op == "call_function" and node.target in _CHANNEL_AXIS
    }
    if not nodes:
        raise InvalidInputError(
            "the model has no dense or convolution node to fit patterns for (fit covers "
            "F.linear and F.conv1d/2d/3d, including nn.Linear and nn.Conv1d/2d/3d)."
        )
    moments: dict[str, Moments] = {}
    weights: dict[str, Tensor] = {}

    def record(node: fx.Node, args: tuple, kwargs: dict, output: Tensor) -> None:
        batch, weight = _node_moments(node, args, kwargs, output, positive=kind == "positive")
        moments[node.name] = add_moments(moments.get(node.name), batch)
        weights[node.name] = weight

    interpreter = _Recorder(plan.module, nodes, record)
    device, dtype = _placement(plan.module)
    samples = 0
    with torch.no_grad():
        for item in tqdm(data, desc="lrpfn.patterns.fit", unit="batch", disable=not progress):
            x = _input_batch(item, device, dtype)
            with TRACE_LOCK.running():
                interpreter.run(x)
            samples += x.shape[0]
    if samples == 0:
        raise InvalidInputError("data yielded no samples; pass an iterable of input batches.")
    tensors = {
        name: estimate(moments[name], weights[name], mean_y if kind == "positive" else "regime")
        for name in nodes
    }
    return Patterns(tensors, kind, mean_y if kind == "positive" else None, samples)


class _Recorder(fx.Interpreter):
    """Runs the graph; hands the arguments and output of each watched node to `record`."""

    def __init__(
        self,
        module: fx.GraphModule,
        watched: Mapping[str, fx.Node],
        record: Callable[[fx.Node, tuple, dict, Tensor], None],
    ) -> None:
        super().__init__(module)  # frees every value after its last use
        self.watched = watched
        self.record = record

    def run_node(self, node: fx.Node) -> Any:
        output = super().run_node(node)
        if node.name in self.watched:
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            self.record(node, args, kwargs, output)
        return output


def _node_moments(
    node: fx.Node, args: tuple, kwargs: dict, output: Tensor, positive: bool
) -> tuple[Moments, Tensor]:
    """The batch's moments at one node, and the node's float64 weight.

    $y = f(x; W, 0)$ is recomputed in float64 from the float64 input by the same call
    that gives the weight vector-Jacobian product (`torch.func.vjp`), so the statistics
    carry no rounding of the model's dtype beyond that of its inputs. The regime is that
    of the forward pass: the node's own output, bias included, is positive.
    """
    x, weight = args[0].to(torch.float64), args[1].detach().to(torch.float64)
    rest = list(args[2:])
    no_bias = dict(kwargs)
    if rest:
        rest[0] = None
    else:
        no_bias["bias"] = None

    def without_bias(w: Tensor) -> Tensor:
        return node.target(x, w, *rest, **no_bias)

    y, weight_vjp = torch.func.vjp(without_bias, weight)
    regime = (output > 0).to(torch.float64) if positive else torch.ones_like(y)
    batch = batch_moments(y, regime, lambda c: weight_vjp(c)[0], _CHANNEL_AXIS[node.target])
    return batch, weight


def _placement(module: torch.nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None, None


def _input_batch(item: Any, device: Any, dtype: torch.dtype | None) -> Tensor:
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise InvalidInputError(
            "fit needs batches that are floating tensors, or tuples/lists whose first item "
            f"is one, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else "")
            + ". Fix: pass e.g. (batch['image'] for batch in loader), or convert with .float()."
        )
    if x.ndim == 0:
        raise InvalidInputError("a batch of data is a scalar; batches need a leading batch axis.")
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError(
            "a batch of data contains NaN or inf, which would make every pattern NaN. "
            "Fix: clean the data (e.g. torch.nan_to_num)."
        )
    return x.to(device=device, dtype=dtype)
