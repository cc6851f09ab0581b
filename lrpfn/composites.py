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

When several keys match a node, a name beats a position or predicate, which beats a type
or family; among keys of one kind the first listed wins. A node with parameters (dense,
convolution, unfolded BatchNorm) that no key matches is an error listing every such node;
parameter-free linear nodes (pooling, sums) fall back to `DEFAULT_RULE`, elementwise
products of two tensors to `DEFAULT_PRODUCT_RULE`, softmaxes to `DEFAULT_SOFTMAX_RULE` and
matrix products of activations to `DEFAULT_MATMUL_RULE` (AttnLRP's rules). A single rule
(`lrp(model, x, rules.Epsilon())`) applies to the linear nodes only.

`resolve(gm, mapping)` returns the assignment `{node name: rule}` as a plain dict that can
be printed. Presets are functions with the keyword names and defaults of zennit's
composites of the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx

from ._canonical import SOURCE
from ._handlers import Handler
from ._ops import channel_affine, padded_convolution
from .errors import InvalidRuleError, UnassignedRuleError
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Gradient, Pass, ZBox, ZPlus
from .rules._attention import AttnSoftmax, ConstantAttention, StopSoftmax, UniformProduct
from .rules._keys import RULE_KEYS, rule_from_key
from .rules._product import EqualSplit, SignalTakesAll

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
    "attnlrp",
    "cp_lrp",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
    "epsilon_plus",
    "epsilon_plus_flat",
    "key_composite",
    "resolve",
]

DEFAULT_RULE = Epsilon(1e-6)
"""The rule of parameter-free linear nodes no key matches (zennit's `Norm`)."""
DEFAULT_PRODUCT_RULE = SignalTakesAll()
"""The rule of products of two tensors no key matches: the signal takes all relevance."""
DEFAULT_SOFTMAX_RULE = AttnSoftmax()
"""The rule of softmax nodes no key matches (AttnLRP's softmax rule)."""
DEFAULT_MATMUL_RULE = UniformProduct(1e-6)
"""The rule of matrix products of activations no key matches (AttnLRP's uniform rule)."""


class NodeInfo(NamedTuple):
    """What keys and predicates see of a node that takes a rule."""

    name: str  # the fx node name
    module: str | None  # qualified name of the source module, if any
    module_type: type | None  # its type
    target: Any  # the fx target (function, method name, module path)
    family: str  # "dense", "convolution", "batchnorm", "normalization", "pooling", "sum",
    # "product", "softmax", "matmul"
    position: int  # index among the nodes that take a rule, in graph order


@dataclass(frozen=True)
class Family:
    """A key matching a layer family, e.g. `CONVOLUTION` (Conv and ConvTranspose, any dim)."""

    name: str

    def __repr__(self) -> str:
        return self.name.upper()


CONVOLUTION, DENSE, POOLING = Family("convolution"), Family("dense"), Family("pooling")
SUM, BATCHNORM, PRODUCT = Family("sum"), Family("batchnorm"), Family("product")
NORMALIZATION = Family("normalization")
SOFTMAX, MATMUL = Family("softmax"), Family("matmul")
_OWN_RULE_SHAPES = ("product", "softmax", "matmul")  # families whose rules are not linear rules
_FAMILY_DEFAULTS = {
    "product": DEFAULT_PRODUCT_RULE,
    "softmax": DEFAULT_SOFTMAX_RULE,
    "matmul": DEFAULT_MATMUL_RULE,
}
_ANY = Family("any")  # every node that takes a linear rule (the single-rule form)


@dataclass(frozen=True)
class First:
    """The first node in graph order (from the input) matched by any of `keys`."""

    keys: tuple

    def __init__(self, *keys: Any) -> None:
        object.__setattr__(self, "keys", keys or (_ANY,))


@dataclass(frozen=True)
class Last:
    """The last node in graph order (nearest the output) matched by any of `keys`."""

    keys: tuple

    def __init__(self, *keys: Any) -> None:
        object.__setattr__(self, "keys", keys or (_ANY,))


_CONVOLUTIONS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    padded_convolution,
}


def family_of(node: fx.Node, handler: Handler) -> str:
    own = getattr(handler, "family", "")
    if own:
        return own
    if handler.kind == "sum":
        return "sum"
    if handler.kind == "product":
        return "product"
    if node.target is F.linear:
        return "dense"
    if node.target in _CONVOLUTIONS:
        return "convolution"
    if node.target in (channel_affine, F.batch_norm, torch.addcmul, "addcmul"):
        return "batchnorm"  # per-channel or elementwise scale and shift
    if node.target in (F.layer_norm, F.group_norm):
        return "normalization"
    return "pooling"


def _type_matches(key: Any, info: NodeInfo) -> bool:
    if isinstance(key, Family):
        if key is _ANY:
            return info.family not in _OWN_RULE_SHAPES
        return key.name == info.family
    if isinstance(key, type):
        return info.module_type is not None and issubclass(info.module_type, key)
    return key is info.target


_NAME, _POSITION, _TYPE = 0, 1, 2


def _level(key: Any) -> int:
    if isinstance(key, str):
        return _NAME
    if isinstance(key, (First, Last)):
        return _POSITION
    if isinstance(key, (Family, type)) or key in _OP_KEYS:
        return _TYPE
    if callable(key):
        return _POSITION
    raise InvalidRuleError(
        f"unsupported rule key {key!r}: use a node or module name (str), a module type, a "
        "functional op, a family such as composites.CONVOLUTION, composites.First(...), "
        "or a predicate (NodeInfo) -> bool."
    )


_OP_KEYS = frozenset(
    {
        F.linear,
        F.layer_norm,
        F.group_norm,
        F.batch_norm,
        torch.addcmul,
        channel_affine,
        *_CONVOLUTIONS,
    }
)


def _matches(key: Any, info: NodeInfo, infos: tuple[NodeInfo, ...]) -> bool:
    if isinstance(key, str):
        return key in (info.name, info.module)
    if isinstance(key, First):
        return any(info is other for other in _first(key.keys, infos))
    if isinstance(key, Last):
        return any(info is other for other in _first(key.keys, tuple(reversed(infos))))
    if _level(key) == _TYPE:
        return _type_matches(key, info)
    return bool(key(info))


def _first(keys: tuple, infos: Iterable[NodeInfo]) -> tuple[NodeInfo, ...]:
    for info in infos:
        if any(_type_matches(key, info) for key in keys):
            return (info,)
    return ()


@dataclass(frozen=True)
class Composite:
    """An ordered mapping from keys to rules (see the module docstring).

    `a | b` is a new composite where the entries of `b` take precedence over those of `a`.
    """

    entries: tuple[tuple[Any, Any], ...]

    def __post_init__(self) -> None:
        for key, rule in self.entries:
            _level(key)
            if not callable(rule):
                raise InvalidRuleError(f"the value for key {key!r} is not a rule: {rule!r}")

    def __or__(self, other: Any) -> Composite:
        return Composite(as_composite(other).entries + self.entries)

    def rule_for(self, info: NodeInfo, infos: tuple[NodeInfo, ...]) -> Any | None:
        matching = [
            (_level(key), index, rule)
            for index, (key, rule) in enumerate(self.entries)
            if _matches(key, info, infos)
        ]
        return min(matching, key=lambda match: match[:2])[2] if matching else None


def as_composite(mapping: Any) -> Composite:
    """Turn any rule mapping (rule, dict, key string, Composite) into a `Composite`."""
    if isinstance(mapping, Composite):
        return mapping
    if isinstance(mapping, str):
        if mapping == "epsilon_gamma_box":
            raise InvalidRuleError(
                "the preset 'epsilon_gamma_box' needs the input bounds: pass "
                "composites.epsilon_gamma_box(low=..., high=...) instead of its name."
            )
        if mapping in PRESETS:
            return PRESETS[mapping]()
        return key_composite(mapping)
    if isinstance(mapping, Mapping):
        return Composite(tuple(mapping.items()))
    if callable(mapping):
        return Composite(((_single_rule_family(mapping), mapping),))
    raise InvalidRuleError(
        f"rules must be a rule, a dict of rules, a Composite or a rule key, got {mapping!r}. "
        f"Known keys: {', '.join([*RULE_KEYS, *PRESETS])}."
    )


def key_composite(key: str) -> Composite:
    """The rule set of a TorchLRP rule key ("epsilon", "alpha2beta1", ...), as TorchLRP's
    keys apply it: the key's rule on the parametrised layers (dense and convolution), the
    presets' stabilized Epsilon on sums, pooling and norms (`_base`), BatchNorm left
    unfolded passing relevance. A sign-split rule on a residual sum would create relevance
    (alpha2beta1 on resnet18's sums gave about 240 x the logit). "gradient" stays the
    gradient everywhere.
    """
    rule = rule_from_key(key)
    if isinstance(rule, Gradient):
        return Composite(((_ANY, rule),))
    return Composite((*_base(DEFAULT_RULE.epsilon).items(), (DENSE, rule), (CONVOLUTION, rule)))


def _single_rule_family(rule: Any) -> Family:
    """The nodes a single rule applies to: its own family for the attention rules, else
    every linear node."""
    if isinstance(rule, (AttnSoftmax, StopSoftmax)):
        return SOFTMAX
    if isinstance(rule, (UniformProduct, ConstantAttention)):
        return MATMUL
    return _ANY


def node_infos(gm: fx.GraphModule, handlers: Mapping[fx.Node, Handler]) -> tuple[NodeInfo, ...]:
    """A `NodeInfo` for each node that takes a rule, in graph order."""
    infos = []
    for node, handler in handlers.items():
        if handler.rule is None:
            continue
        source = node.meta.get(SOURCE)
        module = source.name if source else (node.target if node.op == "call_module" else None)
        module_type = (
            source.type
            if source
            else (type(gm.get_submodule(node.target)) if node.op == "call_module" else None)
        )
        infos.append(
            NodeInfo(
                node.name, module, module_type, node.target, family_of(node, handler), len(infos)
            )
        )
    return tuple(infos)


def resolve(
    gm: fx.GraphModule,
    handlers: Mapping[fx.Node, Handler],
    mapping: Any,
    default_rule: Any = DEFAULT_RULE,
) -> dict[str, Any]:
    """The rule of every node that takes one, `{node name: rule}` in graph order.

    Raises:
        UnassignedRuleError: nodes with parameters that no key matches (all listed).
    """
    composite = as_composite(mapping)
    infos = node_infos(gm, handlers)
    by_name = {node.name: handler for node, handler in handlers.items()}
    table, missing = {}, []
    for info in infos:
        rule = composite.rule_for(info, infos)
        if rule is None:
            if by_name[info.name].rule == "required":
                missing.append(info)
                continue
            rule = _FAMILY_DEFAULTS.get(info.family, default_rule)
        table[info.name] = rule
    if missing:
        lines = "\n".join(
            f"  - {info.name}: {info.family}"
            + (f" from module {info.module!r} ({info.module_type.__name__})" if info.module else "")
            for info in missing
        )
        raise UnassignedRuleError(
            f"{len(missing)} node(s) with parameters match no key of the rule mapping, and lrpfn "
            f"never falls back to the plain gradient silently:\n{lines}\n"
            "Fix: add a key for them, by node or module name, by type (e.g. torch.nn.Linear), "
            "by family (composites.DENSE, composites.CONVOLUTION), or pass a single rule."
        )
    return table


def _base(stabilizer: float) -> dict:
    """zennit's `layer_map_base`: pooling and sums by the stabilized epsilon rule (zennit's
    `Norm`), BatchNorm left unfolded passes relevance. Layer norms (which zennit does not
    explain) get the stabilized epsilon rule on their linearization (Ali et al. 2022)."""
    return {
        POOLING: Epsilon(stabilizer),
        SUM: Epsilon(stabilizer),
        BATCHNORM: Pass(),
        NORMALIZATION: Epsilon(stabilizer),
    }


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """ZPlus on convolutions, Epsilon on dense layers (zennit's `EpsilonPlus`)."""
    return Composite(
        tuple(
            {**_base(stabilizer), CONVOLUTION: ZPlus(stabilizer), DENSE: Epsilon(epsilon)}.items()
        )
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense or convolution layer, then as `epsilon_plus` (zennit's
    `EpsilonPlusFlat`)."""
    return Composite(
        (
            (First(DENSE, CONVOLUTION), Flat(stabilizer)),
            *epsilon_plus(epsilon, stabilizer).entries,
        )
    )


def epsilon_gamma_box(
    low: Any, high: Any, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6
) -> Composite:
    """ZBox(low, high) on the first convolution, Gamma on the other convolutions, Epsilon on
    dense layers (zennit's `EpsilonGammaBox`)."""
    return Composite(
        (
            (First(CONVOLUTION), ZBox(low, high, stabilizer)),
            *_base(stabilizer).items(),
            (CONVOLUTION, Gamma(gamma, stabilizer)),
            (DENSE, Epsilon(epsilon)),
        )
    )


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """AlphaBeta(2, 1) on convolutions, Epsilon on dense layers (zennit's
    `EpsilonAlpha2Beta1`)."""
    return Composite(
        (
            *_base(stabilizer).items(),
            (CONVOLUTION, AlphaBeta(2.0, 1.0, stabilizer)),
            (DENSE, Epsilon(epsilon)),
        )
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense or convolution layer, then as `epsilon_alpha2_beta1`
    (zennit's `EpsilonAlpha2Beta1Flat`)."""
    return Composite(
        (
            (First(DENSE, CONVOLUTION), Flat(stabilizer)),
            *epsilon_alpha2_beta1(epsilon, stabilizer).entries,
        )
    )


def attnlrp(epsilon: float = 1e-6, gamma: float | None = None) -> Composite:
    r"""AttnLRP for transformers (Achtibat et al. 2024, ICML).

    Epsilon on dense layers, convolutions (patch embeddings), sums, pooling and layer norms
    (standard deviation held constant); `rules.AttnSoftmax` on softmaxes;
    `rules.UniformProduct(epsilon)` on products of two activations ($QK^\top$, $PV$);
    `rules.EqualSplit` on elementwise products of two activations (SwiGLU's
    `silu(gate) * up`); RMSNorm and elementwise non-linearities pass relevance (identity).

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-6).
        gamma: if given, `rules.Gamma(gamma)` on dense layers and convolutions instead of
            Epsilon, as the paper recommends for vision transformers.
    """
    linear = Epsilon(epsilon) if gamma is None else Gamma(gamma, epsilon)
    return Composite(
        (
            (DENSE, linear),
            (CONVOLUTION, linear),
            *_base(epsilon).items(),
            (SOFTMAX, AttnSoftmax()),
            (MATMUL, UniformProduct(epsilon)),
            (PRODUCT, EqualSplit()),
        )
    )


def cp_lrp(epsilon: float = 1e-6, gamma: float | None = None) -> Composite:
    r"""CP-LRP for transformers (Ali et al. 2022, ICML): attention weights and gates held
    constant.

    As `attnlrp`, except that no relevance enters a softmax (`rules.StopSoftmax`), the
    softmax operand of $PV$ is a constant (`rules.ConstantAttention(epsilon)`: all
    relevance to $V$), and of an elementwise product of two activations the gate is a
    constant (`rules.SignalTakesAll`: all relevance to the signal).

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-6).
        gamma: if given, `rules.Gamma(gamma)` on dense layers and convolutions.
    """
    linear = Epsilon(epsilon) if gamma is None else Gamma(gamma, epsilon)
    return Composite(
        (
            (DENSE, linear),
            (CONVOLUTION, linear),
            *_base(epsilon).items(),
            (SOFTMAX, StopSoftmax()),
            (MATMUL, ConstantAttention(epsilon)),
            (PRODUCT, SignalTakesAll()),
        )
    )


PRESETS: dict[str, Callable[..., Composite]] = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "attnlrp": attnlrp,
    "cp_lrp": cp_lrp,
}
"""Preset composites by name (`epsilon_gamma_box` needs `low` and `high`)."""
