r"""Mixture-of-experts blocks written so that a graph can be captured and explained.

transformers' sparse MoE blocks (Mixtral, Qwen2-MoE, Qwen3-MoE) run a Python loop over the
experts that the input selects, with token sets of data-dependent size: `torch.export`
cannot capture that. `routed(model)` returns a structural copy of the model (modules
along the paths to the MoE blocks are shallow copies; every parameter is shared, nothing
of the user's model changes) in which each block is a `RoutedExperts`: the same function,
computed densely. With router logits $l = x W_r^\top$ for a token $x$ and $T$ the $k$
experts of largest $l$ (the forward decides the routing for the given input, as the
model does: $T = \{e : l_e \ge$ the $k$-th largest $l\}$, computed in the graph; the
comparison is a decision that no relevance flows through; exact ties at the $k$-th value
would select more than $k$ experts, which the logit check reports),

$$ y = \sum_{e} w_e\, E_e(x), \qquad w = \mathrm{softmax}(l + m), \quad
   m_e = 0 \text{ for } e \in T, \ \text{the dtype's minimum otherwise} $$

which is $\mathrm{softmax}(l)_e / \sum_{t \in T} \mathrm{softmax}(l)_t$ on $T$ and 0
elsewhere, the block's renormalised top-k weights (`norm_topk_prob=False`:
$w = \mathrm{softmax}(l) \odot [e \in T]$); Qwen2-MoE adds its shared expert
$\sigma(x\, w_s^\top)\, E_s(x)$. Every expert runs on every token (unselected ones are
multiplied by 0), so an explanation costs `num_experts / top_k` times the MLP work.

Router weights in the relevance walk: $w_e E_e(x)$ is an elementwise product of two
activations whose gate is $w_e$ (one value per token, broadcast over the hidden axis).
CP-LRP holds the gate constant (`rules.SignalTakesAll`: all relevance to the expert
output, conservative; Ali et al. 2022, ICML, Sec. 3, gates and attention weights as
constants; Arras et al. 2017 for gates). AttnLRP shares it equally between gate and
expert (`rules.EqualSplit`; the uniform rule for products of $n = 2$ activations,
Achtibat et al. 2024, ICML, Eq. 7), and the gate's half flows through the softmax rule
into the router logits and the router's input.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RoutedExperts", "is_sparse_moe", "routed"]


def is_sparse_moe(module: nn.Module) -> bool:
    """A transformers sparse MoE block: a linear router `gate`, a list of `experts`, `top_k`."""
    return (
        type(module).__name__.endswith("SparseMoeBlock")
        and isinstance(getattr(module, "gate", None), nn.Linear)
        and isinstance(getattr(module, "experts", None), nn.ModuleList)
        and isinstance(getattr(module, "top_k", None), int)
    )


class RoutedExperts(nn.Module):
    """A sparse MoE block computed densely (module docstring); returns, as the block does,
    `(hidden_states, router_logits)`."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.gate = block.gate
        self.experts = block.experts
        self.top_k = block.top_k
        self.renormalize = getattr(block, "norm_topk_prob", True)
        self.shared_expert = getattr(block, "shared_expert", None)
        self.shared_expert_gate = getattr(block, "shared_expert_gate", None)

    def forward(self, hidden_states: Tensor) -> tuple[Tensor, Tensor]:
        shape = hidden_states.shape
        tokens = hidden_states.reshape(-1, shape[-1])
        logits = self.gate(tokens)
        kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
        outside = logits < kth  # the experts the block's topk leaves out
        if self.renormalize:
            weights = F.softmax(logits.masked_fill(outside, torch.finfo(logits.dtype).min), -1)
        else:
            weights = F.softmax(logits, -1).masked_fill(outside, 0.0)
        output = sum(
            weights[:, index, None] * expert(tokens) for index, expert in enumerate(self.experts)
        )
        if self.shared_expert is not None:
            shared_gate = torch.sigmoid(self.shared_expert_gate(tokens))
            output = output + shared_gate * self.shared_expert(tokens)
        return output.reshape(shape), logits


def _shallow(module: nn.Module) -> nn.Module:
    """A new module object with the same parameters, buffers and children (own child map)."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    return twin


def routed(model: nn.Module) -> nn.Module:
    """`model` itself if it has no sparse MoE block, else its structural copy with each
    block a `RoutedExperts` (module docstring)."""
    paths = [name for name, module in model.named_modules() if is_sparse_moe(module)]
    if not paths:
        return model
    root = _shallow(model)
    for path in paths:
        *parents, leaf = path.split(".")
        parent = root
        for name in parents:
            child = _shallow(parent._modules[name])
            parent._modules[name] = child
            parent = child
        parent._modules[leaf] = RoutedExperts(parent._modules[leaf])
    return root
