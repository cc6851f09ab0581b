r"""Rules for elementwise products of two tensors, $z = x \odot g$ (gating).

In squeeze-excitation blocks and gated units one factor carries the signal and the other
is a gate computed from it. Following Arras et al. 2017 ("Explaining recurrent neural
network predictions in sentiment analysis"), the default gives all relevance to the
signal and none to the gate: $R_x = R$, $R_g = 0$, which conserves relevance.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import InvalidRuleError

__all__ = ["EqualSplit", "SignalTakesAll"]


@dataclass(frozen=True)
class SignalTakesAll:
    r"""$R_{\text{signal}} = R$, $R_{\text{gate}} = 0$.

    Arguments:
        signal: the index (0 or 1) of the signal operand; None (default) picks the operand
            with the output's shape, and of two such the one not produced by a sigmoid-like
            gate (`sigmoid`, `hardsigmoid`, `softmax`).
    """

    signal: int | None = None

    def __post_init__(self) -> None:
        if self.signal not in (None, 0, 1):
            raise InvalidRuleError(
                f"SignalTakesAll(signal=...) must be 0, 1 or None, got {self.signal!r}."
            )

    def __call__(
        self,
        operands: tuple[Tensor, Tensor],
        output: Tensor,
        relevance: Tensor,
        gate_like: tuple[bool, bool] = (False, False),
    ) -> tuple:
        signal = self.signal
        if signal is None:
            full = [operand.shape == output.shape for operand in operands]
            candidates = [i for i in (0, 1) if full[i]] or [0, 1]
            plain = [i for i in candidates if not gate_like[i]]
            signal = (plain or candidates)[0]
        result = [None, None]
        result[signal] = relevance.sum_to_size(operands[signal].shape)
        return tuple(result)


@dataclass(frozen=True)
class EqualSplit:
    r"""$R_x = R_g = R / 2$ (each summed over its broadcast axes): both factors share the
    relevance equally. Offered for comparison studies; it also conserves relevance."""

    def __call__(
        self,
        operands: tuple[Tensor, Tensor],
        output: Tensor,
        relevance: Tensor,
        gate_like: tuple[bool, bool] = (False, False),
    ) -> tuple:
        half = relevance / 2
        return tuple(half.sum_to_size(operand.shape) for operand in operands)
