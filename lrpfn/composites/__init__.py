"""Composites: which rule explains which graph node.

A *rule mapping* is one of

- a single rule, applied to every node that takes a rule;
- a dict (or a `Composite`) whose keys are
  - a `str`: a node name (`"conv2d_1"`) or a qualified module name (`"features.0"`);
  - a module type (`torch.nn.Conv2d`, matched with `issubclass`) or a functional op
    (`torch.nn.functional.conv2d`);
  - a layer family: `CONVOLUTION`, `DENSE`, `POOLING`, `SUM`, `BATCHNORM`,
    `NORMALIZATION` (layer norm), `PRODUCT`, `SOFTMAX`, `MATMUL` (products of two
    activations, e.g. attention's `Q @ K.mT` and `P @ V`);
  - a position: `First(...)` / `Last(...)`, the first / last node in graph order that
    takes a rule and matches the keys inside (the "first layer" comes from the graph's
    topology, never from module registration order);
  - a predicate `(NodeInfo) -> bool`;
- a TorchLRP rule key (`"epsilon"`, `"alpha2beta1"`, ...) or a preset name.

The key language is in `_matching`, the `Composite` value and the default rules in
`_composite`, the presets in `_presets`, and `resolve(gm, handlers, mapping)`, which
returns the assignment `{node name: rule}` as a plain dict that can be printed, in
`_resolve`.
"""

from ._composite import (
    DEFAULT_MATMUL_RULE,
    DEFAULT_PRODUCT_RULE,
    DEFAULT_RULE,
    DEFAULT_SOFTMAX_RULE,
    Composite,
)
from ._matching import (
    BATCHNORM,
    CONVOLUTION,
    DENSE,
    MATMUL,
    NORMALIZATION,
    POOLING,
    PRODUCT,
    SOFTMAX,
    SUM,
    Family,
    First,
    Last,
    NodeInfo,
    family_of,
)
from ._presets import (
    PRESETS,
    attnlrp,
    cp_lrp,
    epsilon_alpha2_beta1,
    epsilon_alpha2_beta1_flat,
    epsilon_gamma_box,
    epsilon_plus,
    epsilon_plus_flat,
    key_composite,
    lstm_lrp,
    mamba_lrp,
)
from ._resolve import as_composite, node_infos, resolve

__all__ = [
    "BATCHNORM",
    "CONVOLUTION",
    "DEFAULT_MATMUL_RULE",
    "DEFAULT_PRODUCT_RULE",
    "DEFAULT_RULE",
    "DEFAULT_SOFTMAX_RULE",
    "DENSE",
    "MATMUL",
    "NORMALIZATION",
    "POOLING",
    "PRESETS",
    "PRODUCT",
    "SOFTMAX",
    "SUM",
    "Composite",
    "Family",
    "First",
    "Last",
    "NodeInfo",
    "as_composite",
    "attnlrp",
    "cp_lrp",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
    "epsilon_plus",
    "epsilon_plus_flat",
    "family_of",
    "key_composite",
    "lstm_lrp",
    "mamba_lrp",
    "node_infos",
    "resolve",
]
