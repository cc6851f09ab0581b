"""Explain an LSTM text classifier token by token (Arras et al. 2017), on a planted signal.

The task: sequences of 10 tokens drawn from 10 noise words, with one key word ("good" or
"bad") at a random position; the label is which key it is. A small embedding + LSTM +
linear classifier learns it in seconds. `lrpfn.lrp(model, ids, composites.lstm_lrp())`
takes the token ids as they are and returns the relevance of every embedding dimension
of every token; summed over the embedding axis it is the relevance per token, which
should sit on the key word. Prints the measured share and writes a token heatmap.

    python examples/explain_lstm.py [--smoke] [--out out/lstm_tokens.png]

The LSTM is unrolled into per-step ops when it is prepared (gates, products, the cell
sum), so `lrpfn.relevances` shows the relevance of every step's cell state too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import lrpfn
from lrpfn import composites

WORDS = ("good", "bad", "the", "a", "movie", "was", "plot", "and", "it", "film", "very", "so")
KEYS, LENGTH = 2, 10


def planted_batch(size: int, generator: torch.Generator):
    """Token ids `(size, LENGTH)`, labels (0: "good", 1: "bad") and the key positions."""
    ids = torch.randint(KEYS, len(WORDS), (size, LENGTH), generator=generator)
    labels = torch.randint(0, KEYS, (size,), generator=generator)
    positions = torch.randint(0, LENGTH, (size,), generator=generator)
    ids[torch.arange(size), positions] = labels
    return ids, labels, positions


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(WORDS), 8)
        self.rnn = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, KEYS)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.embedding(ids))[0][:, -1])


def train(steps: int) -> Classifier:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        ids, labels, _ = planted_batch(64, generator)
        loss = nn.functional.cross_entropy(model(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def plot(ids: torch.Tensor, per_token: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    """Rows of tokens coloured by relevance (red: for the true label, blue: against)."""
    import matplotlib.pyplot as plt

    rows = len(ids)
    figure, axis = plt.subplots(figsize=(LENGTH * 0.75, rows * 0.42 + 0.5))
    limit = per_token.abs().amax(1, keepdim=True).clamp(min=1e-12)
    axis.imshow((per_token / limit).numpy(), cmap="bwr", vmin=-1, vmax=1, aspect="auto")
    for row in range(rows):
        for column in range(LENGTH):
            word = WORDS[int(ids[row, column])]
            weight = "bold" if int(ids[row, column]) < KEYS else "normal"
            axis.text(column, row, word, ha="center", va="center", fontsize=8, weight=weight)
    axis.set_yticks(range(rows), [f"label: {WORDS[int(label)]}" for label in labels])
    axis.set_xticks([])
    axis.set_title("LSTM relevance per token (lstm_lrp: epsilon, signal takes all)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (batch 64)")
    parser.add_argument("--out", default="out/lstm_tokens.png")
    parser.add_argument("--smoke", action="store_true", help="fewer training steps")
    args = parser.parse_args()
    if args.smoke:
        args.steps = 60
    torch.set_num_threads(1)
    model = train(args.steps)
    ids, labels, positions = planted_batch(200, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accuracy = (model(ids).argmax(1) == labels).double().mean().item()
    print(f"test accuracy: {accuracy:.3f}")
    for name, equal_split in (("signal takes all", False), ("equal split", True)):
        mapping = composites.lstm_lrp(equal_split=equal_split)
        relevance = lrpfn.lrp(model, ids, mapping, target=labels)  # (200, 10, 8)
        per_token = relevance.sum(-1)
        magnitude = per_token.abs()
        share = (magnitude[torch.arange(len(ids)), positions] / magnitude.sum(1)).mean()
        top = (per_token.argmax(1) == positions).double().mean()
        print(f"{name}: share of |relevance| on the key token {share:.2f} (chance 0.10);")
        print(f"  the key is the most relevant token in {top:.0%} of the samples")
        if not equal_split:
            shown = per_token[:8]
    path = Path(args.out)
    plot(ids[:8], shown, labels[:8], path)
    print(f"wrote {path.resolve()}")


if __name__ == "__main__":
    main()
