"""The module `lrpfn` captures for a language model: token embeddings to logits.

Every input besides the embeddings (masks, positions, options) is fixed: tensors become
buffers of the wrapper (a mapping of tensors, such as a mask per layer type, becomes one
buffer per entry), everything else is a keyword constant. A capture therefore holds the
tensors as `get_attr` nodes named after the buffers, and a held capture is reused for
other masks of the same shape by giving it other buffer values (`buffers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ._inputs import accepts

__all__ = ["SELECT", "EmbeddingsToLogits", "buffers", "fixed_options"]

SELECT = "select_index"  # the buffer of the explained logits' indices
_ENTRY = "__"  # buffer `_{name}__{key}` holds entry `key` of the mapping argument `name`


def buffers(constants: Mapping[str, Any]) -> dict[str, Tensor]:
    """The wrapper's buffer name and value of every tensor in `constants` (top level, or
    an entry of a mapping such as a mask per layer type)."""
    found = {}
    for name, value in constants.items():
        if isinstance(value, Tensor):
            found[f"_{name}"] = value
        elif isinstance(value, Mapping):
            found.update(
                {
                    f"_{name}{_ENTRY}{key}": item
                    for key, item in value.items()
                    if isinstance(item, Tensor)
                }
            )
    return found


def fixed_options(constants: Mapping[str, Any]) -> dict[str, Any]:
    """What of `constants` is not a buffer: options and non-tensor mapping entries, which a
    capture holds as constants (so a held capture fits only the same values)."""
    fixed: dict[str, Any] = {}
    for name, value in constants.items():
        if isinstance(value, Mapping):
            fixed[name] = {key: item for key, item in value.items() if not isinstance(item, Tensor)}
        elif not isinstance(value, Tensor):
            fixed[name] = value
    return fixed


class EmbeddingsToLogits(nn.Module):
    """`embeddings -> logits` of a Hugging Face model, every other input fixed.

    The output is selected by `position` and `last`:
    - `last=k`: the logits of the last k positions, `(batch, k, vocab)`;
    - `position=p`: the logits at position p, `(batch, vocab)`;
    - neither (a sequence classifier): the logits as the model returns them.
    Where the model takes `logits_to_keep` (transformers' causal LMs) and the selection
    is at the end of the sequence, the LM head runs on the kept positions only. With
    `select` (indices shaped like the output but for the last axis, a buffer too) the
    output is `logits.gather(-1, select)`: only the explained logits, so that k starts
    of a several-targets walk are `(k, batch, k, m)` rather than `(k, batch, k, vocab)`
    (the gather routes relevance back to the logits it read, the same start exactly).
    """

    def __init__(
        self,
        model: nn.Module,
        constants: Mapping[str, Any],
        position: int | None,
        last: int | None = None,
        select: Tensor | None = None,
    ):
        super().__init__()
        self.model = model
        self.position = position
        self.last = last
        tensors = buffers(constants)
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)
        self.constants = fixed_options(constants)
        self.selects = select is not None
        if select is not None:
            self.register_buffer(SELECT, select, persistent=False)
        kept = last if last is not None else (1 if position == -1 else None)
        if kept is not None and accepts(model, "logits_to_keep"):
            self.constants["logits_to_keep"] = kept

    def forward(self, embeddings: Tensor) -> Tensor:
        tensors: dict[str, Any] = {}
        for name, value in self.constants.items():
            tensors[name] = dict(value) if isinstance(value, Mapping) else value
        for name, value in self.named_buffers(recurse=False):
            if name == SELECT:
                continue
            argument, _, key = name[1:].partition(_ENTRY)
            if key:
                tensors.setdefault(argument, {})[key] = value
            else:
                tensors[argument] = value
        logits = self.model(inputs_embeds=embeddings, **tensors).logits
        if self.last is not None:
            logits = logits[:, -self.last :]
        elif self.position is not None:
            logits = logits[:, self.position]
        return logits.gather(-1, getattr(self, SELECT)) if self.selects else logits
