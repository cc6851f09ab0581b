"""Agreement with lxt 2.1 (AttnLRP and CP-LRP), the reference implementation, as an oracle.

lxt's efficient mode computes relevance as input x modified gradient: it inserts
`divide_gradient`, `stop_gradient` and `identity_rule_implicit` into the forward pass and
leaves linear layers to the plain gradient (LRP-0). `attention_models.py` writes each test
model once with plain ops (explained by lrpfn from the graph, nothing patched) and once
with lxt's rules where lxt's own patches put them. With `epsilon=1e-12` lrpfn's presets
must agree to 1e-6 relative (float64) at the input embeddings.
"""

from __future__ import annotations

import pytest
import torch

import lrpfn
from lrpfn import composites

pytest.importorskip("lxt.efficient.rules", reason="lxt (the oracle) is a test extra")

from attention_models import DTYPE, Decoder, Encoder

PRESETS = {"attnlrp": composites.attnlrp, "cp_lrp": composites.cp_lrp}


def _lxt_relevance(model, x, target):
    x = x.clone().requires_grad_(True)
    output = model(x)
    output[torch.arange(len(x)), target].sum().backward()
    return (x * x.grad).detach()


def _relative_error(got, expected):
    return ((got - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("variant", sorted(PRESETS))
@pytest.mark.parametrize("kind", [Decoder, Encoder], ids=["llama_style", "bert_style"])
def test_agrees_with_lxt(kind, variant):
    plain = kind().eval()
    oracle = kind(lxt=variant).eval()
    oracle.load_state_dict(plain.state_dict())
    x = torch.randn(3, 6, 16, dtype=DTYPE)
    torch.testing.assert_close(oracle(x), plain(x))
    target = plain(x).argmax(-1)
    expected = _lxt_relevance(oracle, x, target)
    got = lrpfn.lrp(plain, x, PRESETS[variant](epsilon=1e-12), target=target)
    assert _relative_error(got, expected) < 1e-6
    if variant == "cp_lrp" and kind is Decoder:  # bias-free: CP-LRP conserves the logit
        logit = plain(x)[torch.arange(3), target]
        torch.testing.assert_close(got.sum((1, 2)), logit, rtol=1e-9, atol=1e-9)
