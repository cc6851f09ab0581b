"""A planted signal: where one token decides the label, a trained LSTM's relevance is on it.

Task: sequences of 10 tokens drawn from 10 noise words, with one key token (word 0 or 1)
at a random position; the label is which key it is. A small LSTM learns it in a second
(fixed seed). The relevance per token (the embedding relevance summed over its axis) of
the true class must put over half of its absolute mass on the key token (chance: 1/10;
measured 0.58), and the key must be the most relevant token of nearly every sample.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: the
# LSTM's biases add relevance as well as absorb it (the trained one here sums to about
# 2.7 x the logit); tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

LENGTH, NOISE, KEYS = 10, 10, 2


def planted_batch(size: int, generator: torch.Generator):
    ids = torch.randint(KEYS, KEYS + NOISE, (size, LENGTH), generator=generator)
    labels = torch.randint(0, KEYS, (size,), generator=generator)
    positions = torch.randint(0, LENGTH, (size,), generator=generator)
    ids[torch.arange(size), positions] = labels
    return ids, labels, positions


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(KEYS + NOISE, 8)
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, KEYS)

    def forward(self, ids):
        return self.head(self.rnn(self.embedding(ids))[0][:, -1])


def trained_classifier() -> Classifier:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        ids, labels, _ = planted_batch(64, generator)
        loss = nn.functional.cross_entropy(model(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_a_trained_lstm_puts_its_relevance_on_the_planted_token():
    model = trained_classifier()
    ids, labels, positions = planted_batch(200, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accuracy = (model(ids).argmax(1) == labels).double().mean().item()
    assert accuracy > 0.95  # it learned the task (else the share would mean nothing)
    per_token = lrpfn.lrp(model, ids, composites.lstm_lrp(), target=labels).sum(-1)
    magnitude = per_token.abs()
    share = magnitude[torch.arange(len(ids)), positions] / magnitude.sum(1)
    assert share.mean().item() > 0.5, share.mean().item()  # measured: 0.58
    assert (per_token.argmax(1) == positions).double().mean().item() > 0.95  # measured: 1.0
