"""The explained logit against the model's own: never a silent wrong answer.

`lrpfn.text` explains a module it builds around the model (`inputs_embeds -> logits`,
masks and positions fixed by `model_inputs`). Should that module compute anything other
than the model does on the same token ids (a mask the model builds differently, a
position it derives from the ids, a token it pools), the relevance would explain a logit
the model never produced. `check_logits` runs the unwrapped model once on the ids and
compares:

    |explained - own| <= tolerance(dtype) * (1 + |own|)    for every sample,

with the tolerance `TOLERANCE[dtype]` (float64 1e-6, float32 1e-3, half types 5e-2: the
rounding of the same computation done in another order, far below the 1e-2 to 1 that a
wrong mask or position gives).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ModelMismatchError, NonFiniteOutputError
from ._inputs import accepts

__all__ = ["TOLERANCE", "check_logits", "own_logits"]

TOLERANCE = {
    torch.float64: 1e-6,
    torch.float32: 1e-3,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-2,
}


def own_logits(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None,
    position: int | None,
    **inputs: Any,
) -> Tensor:
    """The model's own logits `(batch, vocab or classes)` at `position` (all of them for a
    sequence classifier, `position=None`) from one plain forward on the token ids.

    `inputs` are further keyword arguments of the forward (`position_ids`,
    `decoder_input_ids`); those the model does not accept are left out. The check costs
    this one forward (the LM head on the explained position only where the model takes
    `logits_to_keep`)."""
    arguments = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
    if accepts(model, "use_cache"):
        arguments["use_cache"] = False
    if position == -1 and accepts(model, "logits_to_keep"):
        arguments["logits_to_keep"] = 1  # the LM head on the last position only
    arguments = {
        name: value
        for name, value in arguments.items()
        if value is not None and (name == "input_ids" or accepts(model, name))
    }
    with torch.no_grad():
        logits = model(**arguments).logits
    return logits if position is None else logits[:, position]


def check_logits(
    model: nn.Module,
    explained: Tensor,
    own: Tensor,
    target: Tensor,
) -> None:
    """Raise unless the explained logits equal the model's own (see the module docstring).

    Arguments:
        model: the model (named in the messages).
        explained: `(batch, vocab or classes)`, the logits of the module lrpfn explains.
        own: the same logits from the model's own forward (`own_logits`).
        target: `(batch,)`, the explained index per sample.

    Raises:
        NonFiniteOutputError: the model's own logit is NaN or infinite.
        ModelMismatchError: the explained logit differs from the model's own.
    """
    name = type(model).__name__
    own_target = own.gather(1, target[:, None])[:, 0]
    explained_target = explained.gather(1, target[:, None])[:, 0].to(own.dtype)
    bad = ~torch.isfinite(own_target)
    if bad.any():
        raise NonFiniteOutputError(
            f"{name}'s own forward gives a non-finite logit ({own_target[bad].tolist()}) for "
            f"sample(s) {bad.nonzero()[:, 0].tolist()} in {own.dtype}: there is nothing to "
            "explain. Check the model in a plain forward; common causes are a half-precision "
            "overflow, or fully masked rows in eager attention (try float32, "
            "attn_implementation='sdpa', or another padding side)."
        )
    tolerance = TOLERANCE.get(own.dtype, 1e-3)
    difference = (explained_target - own_target).abs()
    wrong = ~(difference <= tolerance * (1 + own_target.abs()))
    if wrong.any():
        raise ModelMismatchError(
            f"The logit lrpfn explains differs from {name}'s own forward on the same "
            f"input_ids and attention_mask: {explained_target[wrong].tolist()} against "
            f"{own_target[wrong].tolist()} for sample(s) {wrong.nonzero()[:, 0].tolist()} "
            f"(tolerance {tolerance:g} relative in {own.dtype}). lrpfn.text runs the model on "
            "inputs_embeds with the masks and positions of lrpfn/text/_inputs.py; look there "
            f"for what {type(model).__name__} builds differently (its attention mask per "
            "layer, its position ids, the token it pools), and report the family."
        )
