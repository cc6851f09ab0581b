"""The module `lrpfn` captures for a language model: token embeddings to logits."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["EmbeddingsToLogits"]


class EmbeddingsToLogits(nn.Module):
    """`embeddings -> logits[:, position]` (or `-> logits`) with every other input fixed."""

    def __init__(self, model: nn.Module, constants: dict[str, Any], position: int | None):
        super().__init__()
        self.model = model
        self.position = position
        self.constants = {}
        for name, value in constants.items():
            if isinstance(value, Tensor):
                self.register_buffer(f"_{name}", value, persistent=False)
            else:
                self.constants[name] = value

    def forward(self, embeddings: Tensor) -> Tensor:
        tensors = {name[1:]: value for name, value in self.named_buffers(recurse=False)}
        logits = self.model(inputs_embeds=embeddings, **tensors, **self.constants).logits
        return logits if self.position is None else logits[:, self.position]
