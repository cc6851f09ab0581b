"""The exceptions lrpfn raises.

Every message says what is wrong, where (the graph node, the op, the argument) and how to
fix it. All exceptions derive from `LRPError`, so `except lrpfn.errors.LRPError` catches
everything the library raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "CompileError",
    "ConservationWarning",
    "InvalidInputError",
    "InvalidRuleError",
    "InvalidTargetError",
    "LRPError",
    "LowPrecisionWarning",
    "ModelMismatchError",
    "NodeFailedError",
    "NonFiniteOutputError",
    "TraceError",
    "TrainingModeError",
    "UnassignedRuleError",
    "UnsupportedModelError",
    "UnsupportedNodeError",
]


class LRPError(Exception):
    """Base class of every error lrpfn raises on purpose."""


class TraceError(LRPError, TypeError):
    """The model could not be captured as a `torch.fx` graph."""


class UnsupportedNodeError(LRPError, NotImplementedError):
    """One or more graph nodes have no relevance handler (all are listed at once)."""


class UnassignedRuleError(LRPError, LookupError):
    """One or more parametrised nodes are matched by no key of the rule mapping."""


class InvalidRuleError(LRPError, ValueError):
    """A rule hyperparameter, rule key or composite entry is invalid."""


class InvalidTargetError(LRPError, ValueError):
    """The `target` or `output_relevance` does not fit the model's output."""


class InvalidInputError(LRPError, ValueError):
    """The input tensor cannot be explained (wrong type, not finite, wrong shape)."""


class NodeFailedError(LRPError, RuntimeError):
    """Running a graph node (forward or relevance step) failed; the message names the node."""


class TrainingModeError(LRPError, RuntimeError):
    """The model is in training mode, where BatchNorm and Dropout make the explanation random."""


class CompileError(LRPError, RuntimeError):
    """`torch.compile` could not compile the walk of a plan prepared with `compile=`."""


class ConservationWarning(LRPError, UserWarning):  # noqa: N818 (a warning)
    """A conservative rule set made the relevance sum grow past twice the explained logit
    (`lrpfn.engine.conservation`); the message names the rule set and the nodes where it grew."""


class LowPrecisionWarning(LRPError, UserWarning):  # noqa: N818 (a warning)
    """The input is float16 or bfloat16: the relevance is computed in that precision and
    differs from float32's by up to a few percent (`lrpfn.lrp` warns once per call)."""


class ModelMismatchError(LRPError, RuntimeError):
    """The output lrpfn explains differs from the model's own output for the same input
    (e.g. a language model's logit computed with another attention mask than the model's)."""


class NonFiniteOutputError(LRPError, FloatingPointError):
    """The model's own output is NaN or infinite for the given input, so nothing can be
    explained."""


class UnsupportedModelError(LRPError, NotImplementedError):
    """A model family, or a part of one (an attention kind, a cache), that lrpfn cannot
    explain yet; the message names the family, the missing piece and the way out."""
