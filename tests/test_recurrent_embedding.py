"""Models fed token ids: `lrpfn.lrp` explains them at the embedding output.

The relevance returned for integer ids is the relevance of each token's embedding vector,
shape `ids.shape + (embedding_dim,)`: the same as explaining the rest of the model at the
looked-up vectors (which is how it is checked here), and summed over the last axis the
relevance per token.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import composites
from lrpfn.errors import InvalidInputError


class Body(nn.Module):
    """Everything after the embedding: a bias-free LSTM and a bias-free head."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 6, batch_first=True, bias=False)
        self.head = nn.Linear(6, 3, bias=False)

    def forward(self, vectors):
        return self.head(self.rnn(vectors)[0][:, -1])


class ModuleLookup(nn.Module):
    def __init__(self, body: Body) -> None:
        super().__init__()
        self.embedding = nn.Embedding(11, 4)
        self.body = body

    def forward(self, ids):
        return self.body(self.embedding(ids))


class FunctionalLookup(nn.Module):
    def __init__(self, body: Body, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.body = body

    def forward(self, ids):
        return self.body(F.embedding(ids, self.weight))


def _models():
    torch.manual_seed(0)
    body = Body().double().eval()
    by_module = ModuleLookup(body).double().eval()
    by_function = FunctionalLookup(body, by_module.embedding.weight.detach().clone()).eval()
    return body, by_module, by_function


@pytest.mark.parametrize("lookup", ["module", "function"])
def test_ids_are_explained_at_the_embedding_output(lookup):
    body, by_module, by_function = _models()
    model = by_module if lookup == "module" else by_function
    ids = torch.randint(0, 11, (2, 7))
    got = lrpfn.lrp(model, ids, composites.lstm_lrp(epsilon=1e-9), target=1)
    vectors = by_module.embedding(ids).detach()
    expected = lrpfn.lrp(body, vectors, composites.lstm_lrp(epsilon=1e-9), target=1)
    assert got.shape == (2, 7, 4)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_relevance_per_token_sums_to_the_logit_of_a_bias_free_model():
    _, model, _ = _models()
    ids = torch.randint(0, 11, (3, 5))
    per_token = lrpfn.lrp(model, ids, composites.lstm_lrp(epsilon=1e-12), target=0).sum(-1)
    assert per_token.shape == ids.shape
    torch.testing.assert_close(per_token.sum(-1), model(ids)[:, 0], rtol=1e-6, atol=1e-9)


def test_ids_for_a_model_without_an_embedding_are_refused_with_the_fix():
    with pytest.raises(InvalidInputError, match=r"x = x\.float\(\).*nn\.Embedding"):
        lrpfn.lrp(nn.Linear(3, 2), torch.ones(2, 3, dtype=torch.long), lrpfn.rules.Epsilon())
