r"""A graph pass that unrolls recurrent layers over time into per-step ops.

`unroll_recurrent(gm, example_input)` edits a canonical `GraphModule` in place: each call of
an `nn.RNN`, `nn.LSTM`, `nn.GRU`, `nn.RNNCell`, `nn.LSTMCell` or `nn.GRUCell` (eval mode;
`num_layers`, `bidirectional`, `batch_first`, `bias`, LSTM `proj_size`, unbatched inputs,
initial states given or zero) becomes the ops of its equations, step by step, so every op
takes its rule as anywhere else (`lrpfn.ops.recurrent`). With $a_t = [x_t; h_{t-1}]$:

- LSTM: $z_k = W_k a_t + b_k$ for $k \in \{i, f, g, o\}$ ($W_k = [W_{ik}, W_{hk}]$,
  $b_k = b_{ik} + b_{hk}$; one `F.linear` and one sigmoid for the gates i, f, o together,
  each gate's part taken by `gate_slice`, and one `F.linear` for g); $i, f, o = \sigma(z_{i,f,o})$,
  $g = \tanh(z_g)$; $c_t = f \odot c_{t-1} + i \odot g$; $h_t = o \odot \tanh(c_t)$, then
  $h_t W_{hr}^\top$ with `proj_size`;
- GRU: $r, u = \sigma(W_{r,u} a_t + b_{r,u})$ (one `F.linear` and sigmoid for both); $n = \tanh(W_{in} x_t + b_{in} + r \odot
  (W_{hn} h_{t-1} + b_{hn}))$; $h_t = (1 - u) \odot n + u \odot h_{t-1}$;
- RNN: $h_t = \tanh(W a_t + b)$ (or ReLU).

Each product of a sigmoid gate (or $1 - u$) and a signal is `gate_times(gate, signal)`.
Where no initial state is given, the first step drops the zero state's terms ($a_1 = x_1$,
$c_1 = i \odot g$), which changes no value. The output sequence, $h_n$ and $c_n$ are
stacked from the steps, so the graph computes what the module computes (to rounding).

The number of steps is a shape, which `torch.fx` does not know: the pass runs the graph
once on `example_input` to read each recurrent layer's input shape (as the `torch.export`
front end specialises to the input's shape), and the unrolled graph holds for that
sequence length only (any batch size): its first op, `time_steps`, refuses another length
with an `InvalidInputError`. `lrpfn.lrp(model, x)` prepares at `x`'s length.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..errors import InvalidInputError, TrainingModeError, UnsupportedNodeError
from ..ops import recurrent_functional as ops
from .source import SOURCE, Source

__all__ = ["unroll_recurrent"]

_MODULES = (nn.RNN, nn.LSTM, nn.GRU)
_CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_GATES = {nn.RNN: 1, nn.RNNCell: 1, nn.LSTM: 4, nn.LSTMCell: 4, nn.GRU: 3, nn.GRUCell: 3}


def unroll_recurrent(gm: fx.GraphModule, example_input: Tensor | None) -> fx.GraphModule:
    """Unroll every recurrent module call of `gm` (edited in place; see the module docstring).

    Raises:
        TrainingModeError: a recurrent module is in training mode.
        InvalidInputError: there is no `example_input` to read the sequence lengths from.
        UnsupportedNodeError: a recurrent module is fed a `PackedSequence`.
    """
    found = {node: module for node in gm.graph.nodes if (module := _recurrent(gm, node))}
    if not found:
        return gm
    _check_eval_mode(found)
    if example_input is None:
        names = ", ".join(f"{node.target!r} ({type(m).__name__})" for node, m in found.items())
        raise InvalidInputError(
            f"the recurrent layers {names} are unrolled over time when the model is prepared, "
            "which needs the sequence length. Fix: pass example_input= (a batch of the length "
            "you will explain) to lrpfn.prepare, or call lrpfn.lrp(model, x)."
        )
    shapes = _input_shapes(gm, found, example_input)
    for node, module in found.items():
        with gm.graph.inserting_before(node):
            structure = _Unroller(gm, node, module).unroll(shapes[node])
        _substitute(gm.graph, node, structure)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return gm


def _recurrent(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    for kind in (*_MODULES, *_CELLS):  # a subclass that overrides forward is left alone
        if isinstance(module, kind) and type(module).forward is kind.forward:
            return module
    return None


def _check_eval_mode(found: Mapping[fx.Node, nn.Module]) -> None:
    training = [f"{node.target!r} ({type(m).__name__})" for node, m in found.items() if m.training]
    if training:
        raise TrainingModeError(
            f"the recurrent layers {', '.join(training)} are in training mode (where dropout "
            "between layers drops units at random); lrpfn explains recurrent layers in eval "
            "mode only. Fix: call model.eval() before explaining."
        )


class _RecordedError(Exception):
    """Every recurrent call's input shape is known: the run stops."""


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph up to its last recurrent module call, keeping each one's input shape.
    The modules' own calls run with warnings silenced: only the shapes are used (PyTorch
    warns, e.g., that oneDNN has no LSTM with projections)."""

    def __init__(self, gm: fx.GraphModule, wanted) -> None:
        super().__init__(gm)
        self.wanted, self.shapes = wanted, {}

    def run_node(self, node: fx.Node) -> Any:
        if len(self.shapes) == len(self.wanted):
            raise _RecordedError
        if node in self.wanted:
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            x = args[0] if args else kwargs["input"]
            if not isinstance(x, Tensor):
                raise UnsupportedNodeError(
                    f"recurrent layer {node.target!r} is fed a {type(x).__name__}; lrpfn unrolls "
                    "padded tensors only. Fix: pass the padded batch instead of a PackedSequence."
                )
            self.shapes[node] = tuple(x.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return super().run_node(node)
        return super().run_node(node)


def _input_shapes(gm, found, example_input) -> dict[fx.Node, tuple[int, ...]]:
    recorder = _ShapeRecorder(gm, found)
    try:
        with torch.no_grad():
            recorder.run(example_input)
    except _RecordedError:
        pass
    return recorder.shapes


def _substitute(graph: fx.Graph, node: fx.Node, structure: Any) -> None:
    """Make the users of `node` use `structure` (a node or a nested tuple of nodes): the
    parts taken by `getitem` directly, anything else through one `recurrent_result` node."""
    for user in list(node.users):
        index = user.args[1] if len(user.args) > 1 else None
        if (
            user.op == "call_function"
            and user.target is operator.getitem
            and isinstance(structure, tuple)
            and isinstance(index, int)
        ):
            _substitute(graph, user, structure[index])
            graph.erase_node(user)
    if node.users:
        replacement = structure
        if not isinstance(structure, fx.Node):
            with graph.inserting_before(node):
                replacement = graph.call_function(ops.recurrent_result, (structure,))
        node.replace_all_uses_with(replacement)


def _bound(node: fx.Node) -> tuple[Any, Any]:
    """The input and initial state arguments of a module call: `(input, hx)`."""
    values = dict(zip(("input", "hx"), node.args, strict=False))
    values.update(node.kwargs)
    return values["input"], values.get("hx")


class _Unroller:
    """Builds the per-step ops of one recurrent module call, before the call's node."""

    def __init__(self, gm: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
        self.gm, self.graph, self.node, self.module = gm, gm.graph, node, module
        self.kind = next(kind for kind in _GATES if isinstance(module, kind))
        self.gates = _GATES[self.kind]
        self.prefix = node.target.replace(".", "_")
        self.constants: dict[str, fx.Node] = {}

    # graph building -------------------------------------------------------------------
    def call(self, target: Any, *args: Any, name: str | None = None) -> fx.Node:
        if name is None:
            return self.graph.call_function(target, args)
        return self.graph.create_node("call_function", target, args, name=name)

    def linear(self, a: fx.Node, weight: fx.Node, bias: fx.Node | None, name: str) -> fx.Node:
        node = self.call(torch.nn.functional.linear, a, weight, bias, name=name)
        node.meta[SOURCE] = Source(self.node.target, type(self.module))
        return node

    def cat(self, parts: list[fx.Node]) -> fx.Node:
        return parts[0] if len(parts) == 1 else self.call(torch.cat, list(parts), -1)

    def constant(self, key: str, make) -> fx.Node | None:
        """A get_attr node for the tensor `make()` (None stays None), made once per key."""
        if key not in self.constants:
            with torch.no_grad():
                tensor = make()
            if tensor is None:
                self.constants[key] = None
            else:
                name = self._fresh(f"_lrpfn_{self.prefix}_{key}")
                self.gm.register_buffer(name, tensor.detach())
                self.constants[key] = self.graph.get_attr(name)
        return self.constants[key]

    def _fresh(self, base: str) -> str:
        index = 0
        while hasattr(self.gm, f"{base}_{index}"):
            index += 1
        return f"{base}_{index}"

    # parameters -----------------------------------------------------------------------
    def parameter(self, name: str, suffix: str) -> Tensor:
        return getattr(self.module, f"{name}{suffix}")

    def rows(self, name: str, suffix: str, gates: tuple[int, ...]) -> Tensor:
        """The rows of the gates `gates` of parameter `name` (stacked in that order)."""
        chunks = self.parameter(name, suffix).chunk(self.gates)
        return torch.cat([chunks[gate] for gate in gates]) if len(gates) > 1 else chunks[gates[0]]

    def gate_weight(self, suffix: str, gates: tuple[int, ...], with_state: bool) -> fx.Node:
        """$W_k$ of the gates `gates`: `[W_ik, W_hk]` for $a_t = [x_t; h_{t-1}]$, else `W_ik`."""

        def make() -> Tensor:
            w_ih = self.rows("weight_ih", suffix, gates)
            if not with_state:
                return w_ih
            return torch.cat([w_ih, self.rows("weight_hh", suffix, gates)], 1)

        return self.constant(f"w{suffix}_{''.join(map(str, gates))}_{int(with_state)}", make)

    def gate_bias(
        self, suffix: str, gates: tuple[int, ...], parts: str = "ih+hh"
    ) -> fx.Node | None:
        """$b_k$ of the gates `gates`: `b_ik + b_hk`, or one of them (`parts` "ih", "hh")."""

        def make() -> Tensor | None:
            if not self.module.bias:
                return None
            terms = [self.rows(f"bias_{part}", suffix, gates) for part in parts.split("+")]
            return terms[0] if len(terms) == 1 else terms[0] + terms[1]

        return self.constant(f"b{suffix}_{''.join(map(str, gates))}_{parts}", make)

    def state_weight(self, suffix: str, gate: int) -> fx.Node:
        return self.constant(f"whh{suffix}_{gate}", lambda: self.rows("weight_hh", suffix, (gate,)))

    # steps ----------------------------------------------------------------------------
    def step(self, parts: list[fx.Node], state: tuple, suffix: str, label: str) -> tuple:
        if self.kind in (nn.LSTM, nn.LSTMCell):
            return self.lstm_step(parts, state, suffix, label)
        if self.kind in (nn.GRU, nn.GRUCell):
            return (self.gru_step(parts, state[0], suffix, label),)
        return (self.rnn_step(parts, state[0], suffix, label),)

    def preactivation(self, a, with_state, suffix, gate, label) -> fx.Node:
        """$z_k = W_k a_t + b_k$ of gate `gate` (named `{label}_z{k}`)."""
        weight = self.gate_weight(suffix, (gate,), with_state)
        return self.linear(a, weight, self.gate_bias(suffix, (gate,)), f"{label}_z{gate}")

    def sigmoid_gates(self, a, with_state, suffix, gates, names, label) -> list[fx.Node]:
        r"""$\sigma(W_k a_t + b_k)$ of the gates `gates`: one `F.linear` and one sigmoid for
        all (named `{label}_z`, `{label}_gates`), then each gate's part (`gate_slice`, named
        `{label}_{name}`)."""
        weight = self.gate_weight(suffix, gates, with_state)
        z = self.linear(a, weight, self.gate_bias(suffix, gates), f"{label}_z")
        values = self.call(torch.sigmoid, z, name=f"{label}_gates")
        count = len(gates)
        return [
            self.call(ops.gate_slice, values, index, count, name=f"{label}_{name}")
            for index, name in enumerate(names)
        ]

    def joint_input(self, parts: list[fx.Node], h: fx.Node | None) -> fx.Node:
        """$a_t = [x_t; h_{t-1}]$, or $x_t$ for a zero state."""
        return self.cat(parts if h is None else [*parts, h])

    def lstm_step(self, parts, state, suffix, label) -> tuple[fx.Node, fx.Node]:
        h, c = state
        a = self.joint_input(parts, h)
        # the sigmoid gates share one linear map (which takes no relevance under
        # SignalTakesAll), the candidate g has its own
        i, f, o = self.sigmoid_gates(a, h is not None, suffix, (0, 1, 3), "ifo", label)
        g = self.call(torch.tanh, self.preactivation(a, h is not None, suffix, 2, label))
        update = self.call(ops.gate_times, i, g, name=f"{label}_{'c' if c is None else 'ig'}")
        if c is None:  # c_0 = 0: c_1 = i * g
            c_new = update
        else:
            kept = self.call(ops.gate_times, f, c)
            c_new = self.call(operator.add, kept, update, name=f"{label}_c")
        h_new = self.call(ops.gate_times, o, self.call(torch.tanh, c_new), name=f"{label}_h")
        if getattr(self.module, "proj_size", 0) > 0:
            projection = self.constant(f"whr{suffix}", lambda: self.parameter("weight_hr", suffix))
            h_new = self.linear(h_new, projection, None, f"{label}_projection")
        return h_new, c_new

    def gru_step(self, parts, h, suffix, label) -> fx.Node:
        a = self.joint_input(parts, h)
        r, u = self.sigmoid_gates(a, h is not None, suffix, (0, 1), "ru", label)
        x = self.cat(parts)
        weight = self.gate_weight(suffix, (2,), with_state=False)
        candidate = self.linear(x, weight, self.gate_bias(suffix, (2,), "ih"), f"{label}_z2")
        if h is None:  # W_hn h + b_hn = b_hn
            state_term = self.gate_bias(suffix, (2,), "hh")
        else:
            state_term = self.linear(
                h, self.state_weight(suffix, 2), self.gate_bias(suffix, (2,), "hh"), f"{label}_zh2"
            )
        if state_term is not None:
            candidate = self.call(operator.add, candidate, self.call(ops.gate_times, r, state_term))
        n = self.call(torch.tanh, candidate)
        keep = self.call(operator.sub, 1.0, u)
        kept = self.call(ops.gate_times, keep, n)
        if h is None:
            return kept
        return self.call(operator.add, kept, self.call(ops.gate_times, u, h), name=f"{label}_h")

    def rnn_step(self, parts, h, suffix, label) -> fx.Node:
        z = self.preactivation(self.joint_input(parts, h), h is not None, suffix, 0, label)
        relu = self.module.nonlinearity == "relu"
        return self.call(torch.relu if relu else torch.tanh, z, name=f"{label}_h")

    # whole modules --------------------------------------------------------------------
    def unroll(self, shape: tuple[int, ...]) -> Any:
        x, hx = _bound(self.node)
        if self.kind in _CELLS:
            return self.unroll_cell(x, hx)
        return self.unroll_sequence(x, hx, shape)

    def initial_states(self, hx: Any, count: int) -> list[tuple]:
        """Per layer and direction, `(h, c)` (LSTM) or `(h,)`, None where hx is not given."""
        lstm = self.kind in (nn.LSTM, nn.LSTMCell)
        if hx is None:
            return [(None, None) if lstm else (None,)] * count
        hx = self.parts_of(hx, 2) if lstm else (hx,)
        if self.kind in _CELLS:
            return [tuple(hx)]
        return [tuple(self.call(operator.getitem, part, k) for part in hx) for k in range(count)]

    def parts_of(self, value: Any, count: int) -> tuple:
        if isinstance(value, (tuple, list)):
            return tuple(value)
        if isinstance(value, fx.Node) and value.target is ops.recurrent_result:
            return tuple(value.args[0])
        return tuple(self.call(operator.getitem, value, k) for k in range(count))

    def unroll_cell(self, x: fx.Node, hx: Any) -> Any:
        (state,) = self.initial_states(hx, 1)
        result = self.step([x], state, "", f"{self.prefix}_t0")
        return result if len(result) > 1 else result[0]

    def unroll_sequence(self, x: fx.Node, hx: Any, shape: tuple[int, ...]) -> tuple:
        module = self.module
        batched = len(shape) == 3
        axis = 1 if batched and module.batch_first else 0
        length = shape[axis]
        directions = 2 if module.bidirectional else 1
        steps = self.call(ops.time_steps, x, length, axis)
        parts = [[self.call(ops.step_at, steps, t, length)] for t in range(length)]
        initial = self.initial_states(hx, module.num_layers * directions)
        finals = []
        for layer in range(module.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                state = initial[layer * directions + direction]
                hidden: list[Any] = [None] * length
                order = range(length) if direction == 0 else range(length - 1, -1, -1)
                for t in order:
                    label = f"{self.prefix}_l{layer}{'r' if direction else ''}_t{t}"
                    state = self.step(parts[t], state, suffix, label)
                    hidden[t] = state[0]
                finals.append(state)
                outputs.append(hidden)
            parts = [[hidden[t] for hidden in outputs] for t in range(length)]
        stacked = [self.call(torch.stack, hidden, axis) for hidden in outputs]
        output = self.cat(stacked)
        h_n = self.call(torch.stack, [state[0] for state in finals], 0)
        if self.kind is nn.LSTM:
            c_n = self.call(torch.stack, [state[1] for state in finals], 0)
            return output, (h_n, c_n)
        return output, h_n
