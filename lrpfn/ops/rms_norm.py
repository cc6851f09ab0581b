r"""RMSNorm: `nn.RMSNorm`, `F.rms_norm` and the computed pattern
`x * rsqrt(mean(x**2) + eps) * w` (folded into one node by `capture.attention`).

$y = x / \mathrm{rms}(x) \odot w$ with $\mathrm{rms}(x) = \sqrt{\overline{x^2} + \epsilon}$.
Holding $\mathrm{rms}(x)$ constant (AttnLRP's identity rule on the normalisation), $y$ is a
diagonal linear map of $x$ without bias, and LRP-0 on it passes relevance unchanged:
$R_x = R$. The handler does exactly that.

Reference:
    Achtibat et al. 2024, "AttnLRP: Attention-aware layer-wise relevance propagation for
    transformers", ICML, Sec. 3.3 (normalisation layers: the identity rule).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import nn

from .attention_functional import rms_normalize
from .handler import PASS_ZERO, Handler

__all__ = ["HANDLERS"]

HANDLERS: Mapping[Any, Handler] = {
    nn.RMSNorm: PASS_ZERO,
    F.rms_norm: PASS_ZERO,
    rms_normalize: PASS_ZERO,
}
"""The RMSNorm family's handlers (merged into `lrpfn.HANDLERS`)."""
