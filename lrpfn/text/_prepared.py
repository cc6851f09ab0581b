"""`prepare`: a language model captured once per input shape, held by the user.

`torch.export` specialises a capture to the embeddings' shape (and to the options the
model was called with), and costs far more than the walk (0.3-1.0 s against a few
milliseconds on a tiny model). `lrpfn.text.prepare(model)` returns a
`PreparedLanguageModel`, which holds one `lrpfn.Plan` per capture key

    (embeddings shape, dtype, device, selected logits, mask shapes, fixed options)

and which `explain`, `explain_generation` and `explain_inside` accept in place of the
model. A call at a key seen before runs no capture: the held plan is given this call's
masks and positions. These reach the captured graph only as the wrapper's buffers
(`get_attr` nodes, see `text._wrapper`), so the plan of a call is the held plan with its
graph module's buffer table replaced: same graph, same rules, new constant values.
Nothing of the model is copied or changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..composites import attnlrp, mamba_lrp
from ..engine import Plan, prepare as prepare_plan
from ..errors import InvalidInputError, InvalidRuleError, UnsupportedModelError
from ._experts import routed
from ._inputs import accepts, is_bidirectional, is_state_space, model_inputs
from ._seq2seq import is_encoder_decoder
from ._wrapper import SELECT, EmbeddingsToLogits, buffers, fixed_options

__all__ = ["PreparedLanguageModel", "check_ids", "prepare", "prepared"]


@dataclass(frozen=True, eq=False)
class PreparedLanguageModel:
    """A Hugging Face language model with its rules and its captures, one per shape.

    Attributes:
        model: the model (never modified).
        rules: the rule mapping every capture is prepared with.
        causal: whether the model attends causally.
        token_logits: whether the logits have a token axis (a language-model head), not
            one row per sequence (a sequence classifier).
        check: whether every call checks its explained logits against one plain forward
            of the model (`text._check`); False checks only that they are finite.
        plans: `{capture key: Plan}`, filled by the calls (the first call at each key
            captures; the others reuse). Read `len(prepared.plans)` to see how many.
        verified: the capture keys whose logits a call has checked against the model.
    """

    model: nn.Module
    rules: Any
    causal: bool
    token_logits: bool
    check: bool = True
    plans: dict = field(default_factory=dict, repr=False)
    verified: set = field(default_factory=set, repr=False)

    def embed(self, input_ids: Tensor) -> Tensor:
        """The token embeddings of `input_ids` (no gradient)."""
        check_ids(input_ids)
        with torch.no_grad():
            return self.model.get_input_embeddings()(input_ids).detach()

    def inputs(self, input_ids: Tensor, attention_mask: Tensor | None, dtype) -> dict[str, Any]:
        """The constant keyword arguments besides the embeddings (`text._inputs`); for a
        decoder the positions always (0, 1, ... where nothing is padded, the model's own
        default), so that calls with and without padding share one capture."""
        constants = model_inputs(self.model, input_ids, attention_mask, dtype, self.causal)
        if self.causal and "position_ids" not in constants and accepts(self.model, "position_ids"):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            constants["position_ids"] = positions.expand(input_ids.shape)
        return constants

    def plan(
        self,
        embeddings: Tensor,
        constants: Mapping[str, Any],
        position: int | None,
        last: int | None = None,
        select: Tensor | None = None,
    ) -> Plan:
        """The plan explaining `EmbeddingsToLogits(model, constants, position, last,
        select)` at `embeddings`' shape: captured on the first call at its key, reused
        after."""
        tensors = buffers(constants)
        if select is not None:
            tensors[SELECT] = select
        key = _capture_key(embeddings, tensors, fixed_options(constants), position, last)
        held = self.plans.get(key)
        if held is None:
            wrapper = EmbeddingsToLogits(routed(self.model), constants, position, last, select)
            held = prepare_plan(wrapper, self.rules, example_input=embeddings)
            self.plans[key] = held
            return held
        return _with_buffers(held, tensors)

    def checked_plan(
        self,
        embeddings: Tensor,
        constants: Mapping[str, Any],
        position: int | None,
        last: int | None = None,
        select: Tensor | None = None,
    ) -> tuple[Plan, tuple | None]:
        """`plan(...)`, and the capture key if this call is to check its logits against
        the model's own forward (always with `check=True`; else until a check of this
        capture has passed, which the caller records with `verified.add(key)`)."""
        tensors = {**buffers(constants), **({} if select is None else {SELECT: select})}
        key = _capture_key(embeddings, tensors, fixed_options(constants), position, last)
        plan = self.plan(embeddings, constants, position, last, select)
        return plan, key if self.check or key not in self.verified else None

    def logits(self, embeddings: Tensor, constants: Mapping[str, Any]) -> Tensor:
        """The model's full logits for `embeddings` under `constants` (one plain forward)."""
        with torch.no_grad():
            return EmbeddingsToLogits(self.model, constants, None)(embeddings)


def prepare(
    model: nn.Module,
    input_ids: Tensor | tuple[int, int] | None = None,
    rules: Any = None,
    *,
    causal: bool | None = None,
    check: bool = True,
) -> PreparedLanguageModel:
    """Hold a language model's captures, so that repeated explanations never capture again.

        prepared = text.prepare(model, input_ids)      # captures now, at this shape
        text.explain(prepared, input_ids)              # no torch.export
        text.explain(prepared, other_ids_same_shape)   # no torch.export either

    Arguments:
        model: a Hugging Face language model in eval mode (see `lrpfn.text.explain`).
        input_ids: optional example ids `(batch, tokens)` or the shape itself: the capture
            for explaining the next-token logit (`explain`'s defaults) at that shape is made
            now rather than on the first call.
        rules: the rule mapping (default `lrpfn.composites.attnlrp()`; for Mamba
            models `lrpfn.composites.mamba_lrp()`).
        causal: whether the model attends causally (default: inferred).
        check: True (default): every call checks the explained logits against one plain
            forward of the model on the same ids and mask (a named error where they
            differ), which costs that forward. False: the first call at each capture is
            checked (the capture against the model), later calls check only that the
            logits are finite; the masks and positions of a call come from the same code
            for every call (`text._inputs`).

    Returns:
        A `PreparedLanguageModel` to pass to `explain`, `explain_generation` and
        `explain_inside` in place of the model.
    """
    _check_model(model)
    state_space = is_state_space(model)  # Mamba: no attention, its 2-d mask as it is
    if causal is None:
        causal = not state_space and not is_bidirectional(model)
    if rules is None:
        rules = mamba_lrp() if state_space else attnlrp()
    probe = PreparedLanguageModel(model, rules, causal, token_logits=True, check=True)
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    embeddings = probe.embed(ids)
    logits = probe.logits(embeddings, probe.inputs(ids, None, embeddings.dtype))
    held = replace(probe, token_logits=logits.ndim == 3, check=check)
    if input_ids is not None:
        if isinstance(input_ids, (tuple, list, torch.Size)):
            input_ids = torch.zeros(tuple(input_ids), dtype=torch.long, device=device)
        embeddings = held.embed(input_ids)
        constants = held.inputs(input_ids, None, embeddings.dtype)
        held.plan(embeddings, constants, -1 if held.token_logits else None)
    return held


def prepared(
    model: nn.Module | PreparedLanguageModel, rules: Any, causal: bool | None = None
) -> PreparedLanguageModel:
    """`model` itself if prepared (then `rules` and `causal` must be None or its own),
    else `prepare(model, rules=rules, causal=causal)`."""
    if isinstance(model, PreparedLanguageModel):
        if rules is not None and rules is not model.rules:
            raise InvalidRuleError(
                "this PreparedLanguageModel holds captures prepared with its own rules; pass "
                "rules=None, or text.prepare(model, rules=...) anew for other rules."
            )
        if causal is not None and causal != model.causal:
            raise InvalidInputError(
                f"this PreparedLanguageModel attends with causal={model.causal}; pass "
                "causal=None, or text.prepare(model, causal=...) anew."
            )
        return model
    return prepare(model, rules=rules, causal=causal)


def _check_model(model: nn.Module) -> None:
    if is_encoder_decoder(model):
        raise UnsupportedModelError(
            f"{type(model).__name__} is an encoder-decoder: text.prepare holds captures of "
            "decoder-only and encoder models (and explain_generation needs one). Explain it "
            "with text.explain(model, input_ids, decoder_input_ids=...), which captures per call."
        )
    if getattr(model, "get_input_embeddings", lambda: None)() is None:
        raise InvalidInputError(
            f"{type(model).__name__} has no get_input_embeddings(): lrpfn.text explains Hugging "
            "Face language models at their token embeddings. For other models use lrpfn.lrp."
        )


def check_ids(input_ids: Any) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        raise InvalidInputError(
            "input_ids must be a (batch, tokens) integer tensor, e.g. "
            "tokenizer(texts, return_tensors='pt', padding=True).input_ids."
        )


def _capture_key(embeddings, tensors, fixed, position, last) -> tuple:
    shapes = tuple(
        (name, tuple(value.shape), value.dtype, value.device)
        for name, value in sorted(tensors.items())
    )
    options = repr(sorted(fixed.items()))
    shape = (tuple(embeddings.shape), embeddings.dtype, embeddings.device)
    return (shape, shapes, options, position, last)


def _with_buffers(plan: Plan, values: Mapping[str, Tensor]) -> Plan:
    """`plan` whose graph module reads `values` for its buffers of those names.

    The module is a shallow copy sharing the graph (so the plan's node-keyed tables hold)
    and the submodules, with its own buffer table; the held plan is left as it was."""
    module = copy.copy(plan.module.__dict__)
    module["_buffers"] = {**plan.module._buffers, **values}
    graph_module = object.__new__(type(plan.module))
    graph_module.__dict__.update(module)
    return replace(plan, module=graph_module)
