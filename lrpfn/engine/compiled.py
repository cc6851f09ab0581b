"""The opt-in compiled walk: `lrpfn.prepare(model, rules, compile=True)`.

What is compiled. Given a plan, the walk is static: the same graph, the same rules, the same
handlers, so for one input signature it is a fixed sequence of tensor ops. It is
recorded, with `torch.fx.experimental.proxy_tensor.make_fx`, as two flat aten graphs,

- the forward: `x -> (kept values..., output)`, the values `engine.walk.forward`
  keeps for the walk (the parameters among them);
- the walk: `(kept values..., start) -> input relevance`, `engine.walk.backward` from
  the rescaled start relevance (for targets of shape `(batch, k)`, the `torch.func.vmap`
  over the k starts, recorded batched),

and each graph is handed to `torch.compile(graph, backend=backend, dynamic=False)`. The
start relevance between them (one-hot target times output, its power-of-two rescaling and
the checks of `target`) runs eagerly with the same code as the plain plan
(`engine.relevance`), so both paths explain exactly the same thing.

When it recompiles. Compiled graphs are cached on the plan's `CompiledWalk` (never in
global state; the model is not touched), keyed by the plan (a copy made with other rules
or handlers by `dataclasses.replace` gets its own), the input's shape, dtype and device
and, for the walk, the start relevance's shape and dtype (one target per sample, or k). A call
with a new key records and compiles anew, transparently: the first call at each key pays
the compile time, later calls reuse it. `lrpfn.relevances` (every node's relevance) runs
the plain walk. Named errors (`lrpfn.errors.CompileError`): an unknown backend name (at
`prepare`), a backend that fails to compile, and a rule or handler that reads a tensor's
value in Python (`bool(t)`, `.item()`), which one recorded graph cannot hold.

Measured costs (`benchmarks/RESULTS_compile.md`: inductor, CPU, 2 threads, on a shared
2-core machine at load 10-16, so the absolute times are inflated and the ratios noisy):
compiling took 399 s wall-clock (78 s of this process's CPU time) for resnet50 at batch 8,
315 s (71 s) at batch 1, 172 s (53 s) for vgg16 at batch 8 and 89 s (34 s) at batch 1; the
compiled plan then ran 1.47x, 0.80x, 1.21x and 1.25x as fast as the plain plan (medians
of 3 interleaved calls). Inductor runs without its layout optimisation: channels-last
convolutions round float32 differently, which put vgg16 at 224 2.3e-2 (of the largest
relevance) from the plain float32 plan; without it the compiled float32 relevance equals
the plain one bit for bit there, both 1.7e-3 from float64 (`benchmarks/compile_precision.py`;
the stabiliser amplifies float32's rounding of outputs near zero). In float64 they agree
to 1e-12 (tests/test_compiled.py; 3e-16 on its small CNN).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
from torch import Tensor, fx
from torch.fx.experimental.proxy_tensor import make_fx

from ..capture import TRACE_LOCK
from ..errors import CompileError, LRPError
from .relevance import check_output, initial_relevance, power_of_two_scale, rescaled
from .walk import backward, forward

__all__ = ["CompiledWalk"]

Signature = tuple[Any, ...]


def _signature(tensor: Tensor) -> Signature:
    return (tuple(tensor.shape), tensor.dtype, tensor.device)


class CompiledWalk:
    """The compiled forward and walk of one plan, per input signature.

    Arguments:
        backend: a `torch.compile` backend: "inductor" (generated C++ or Triton code),
            "aot_eager" (the same recorded graphs run by aten, without code generation:
            quick to compile, for checks), another registered name, or a backend function.
    """

    def __init__(self, backend: str | Callable = "inductor") -> None:
        if isinstance(backend, str):
            known = torch._dynamo.list_backends(exclude_tags=())
            if backend not in known:
                raise CompileError(
                    f"compile={backend!r} is not a torch.compile backend. Fix: pass "
                    f"compile=True (inductor), compile='aot_eager', or one of {known}."
                )
        elif not callable(backend):
            raise CompileError(
                f"compile= takes True, False, a torch.compile backend name such as "
                f"'inductor' or 'aot_eager', or a backend function; got {backend!r}."
            )
        self.backend = backend
        self._forwards: dict[Signature, tuple[Callable, list[fx.Node], fx.Node, Any]] = {}
        self._walks: dict[Signature, Callable] = {}

    def __repr__(self) -> str:
        return f"CompiledWalk(backend={self.backend!r}, compiled={self.compiled_signatures})"

    @property
    def compiled_signatures(self) -> int:
        """How many graphs (forwards and walks) have been compiled so far."""
        return len(self._forwards) + len(self._walks)

    def explain(self, plan: Any, x: Tensor, target: Any, output_relevance: Any) -> Tensor:
        """`lrpfn.lrp(plan, x, target=..., output_relevance=...)` through the compiled graphs."""
        with torch.no_grad(), TRACE_LOCK.running():
            key = (id(plan), *_signature(x))  # a plan copied with other handlers: its own
            if key not in self._forwards:
                self._forwards[key] = self._compiled_forward(plan, x)
            compiled_forward, kept, output_node, _ = self._forwards[key]
            values = list(self._run(compiled_forward, x))  # the output last
            output = values[-1]
            check_output(output, x, output_relevance)
            initial = initial_relevance(output, target, output_relevance)
            scale = power_of_two_scale(initial, output.ndim)
            start = rescaled(initial, scale.reciprocal())  # exact: scale is a power of two
            walk_key = (*key, *_signature(start))
            if walk_key not in self._walks:
                several = start.ndim == output.ndim + 1
                walk = _walk_function(plan, kept, output_node, several)
                self._walks[walk_key] = self._compile(_recorded(walk, *values, start))
            result = self._run(self._walks[walk_key], *values, start)
            return rescaled(result, scale)

    def _compiled_forward(self, plan: Any, x: Tensor):
        layout: dict[str, Any] = {}

        def run_forward(x: Tensor) -> tuple[Tensor, ...]:
            env, output_node = forward(plan, x)
            # the output last: it starts the walk, and its own step reads it (z)
            kept = [node for node in env if node is not output_node] + [output_node]
            layout.update(kept=kept, output_node=output_node)  # the same on every call
            return tuple(env[node] for node in kept)

        graph = _recorded(run_forward, x)  # runs the forward once, recording its ops
        # the plan is held so that its id in the key is not reused while the entry lives
        return self._compile(graph), layout["kept"], layout["output_node"], plan

    def _compile(self, graph: fx.GraphModule) -> Callable:
        # inductor's layout optimisation runs convolutions channels-last, whose CPU kernels
        # round float32 differently (vgg16 at 224: 2.3e-2 of the largest relevance from
        # the plain float32 plan, 14x the plain plan's own distance to float64); keep the
        # plain layout, so that both plans compute the same numbers
        options = {"layout_optimization": False} if self.backend == "inductor" else None
        return torch.compile(
            graph, backend=self.backend, dynamic=False, fullgraph=True, options=options
        )

    def _run(self, compiled: Callable, *arguments: Tensor) -> Any:
        try:
            return compiled(*arguments)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            raise CompileError(
                f"torch.compile with backend {self.backend!r} failed: "
                f"{type(error.inner_exception).__name__}: {error.inner_exception}\n"
                "Fix: prepare the plan with compile='aot_eager' (no code generation, no C++ "
                "compiler needed) or compile=False."
            ) from error


def _recorded(function: Callable[..., Any], *arguments: Tensor) -> fx.GraphModule:
    """`function` recorded as one aten graph by running it once (`make_fx`)."""
    try:
        return make_fx(function)(*arguments)
    except Exception as error:
        if isinstance(error, LRPError) and not _reads_a_value(error):
            raise  # e.g. an input that does not fit the model: the plain plan's error
        raise CompileError(
            f"the walk could not be recorded as one graph of tensor ops: {error}\nA rule or "
            "handler branches on tensor values in Python (`bool(t)`, `.item()`). Fix: "
            "prepare the plan with compile=False, or write that step with tensor ops "
            "(`torch.where`)."
        ) from error


def _reads_a_value(error: BaseException | None) -> bool:
    """Whether `error` (or its cause) is make_fx refusing to read a traced tensor's value."""
    while error is not None:
        if "value out of a tracing tensor" in str(error):
            return True
        error = error.__cause__
    return False


def _walk_function(
    plan: Any, kept: list[fx.Node], output_node: fx.Node, several: bool
) -> Callable[..., Tensor]:
    """`(kept values..., start) -> input relevance`, vmapped over the targets if `several`."""

    def walk_one(values: tuple, start: Tensor) -> Tensor:
        env = dict(zip(kept, values, strict=True))
        return backward(plan, env, output_node, start, False)[0]

    def walk(*arguments: Tensor) -> Tensor:
        *values, start = arguments
        if several:
            return torch.func.vmap(lambda one: walk_one(values, one))(start)
        return walk_one(values, start)

    return walk
