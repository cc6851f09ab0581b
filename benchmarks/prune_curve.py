"""Accuracy against the pruned fraction on the digits CNN: relevance-guided pruning
(Yeom et al. 2021) against weight-magnitude pruning (Li et al. 2017) and random pruning.

    python benchmarks/prune_curve.py                 # writes RESULTS_pruning.md and the figure
    python benchmarks/prune_curve.py --smoke --no-write

The CNN of examples/_digits.py (16 and 32 channels) is trained for a few seconds with
fixed seeds on 75% of scikit-learn's digits (3 models; the accuracies are their means). The relevance criterion is the per-class
relevance of each channel that `lrpfn.concepts.atlas` stores (`class_relevance`: per
explained class, the mean over its samples of the channel's relevance normalised by the
sum of absolute relevance of the layer), from an atlas over the training samples (each
explained for its label, epsilon-plus rules), averaged over the classes; the
same fraction of channels of both convolutions is removed (masked) by
`lrpfn.concepts.prune` (or, `global`, the lowest scores of both layers together). Weight magnitude scores each filter by the L1 norm of its
weights; random pruning averages 5 seeded random rankings. Accuracy on the 25% held out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
import _digits  # noqa: E402

from lrpfn import composites, concepts  # noqa: E402

LAYERS = ("_0", "_3")  # the two convolutions of the Sequential
FRACTIONS = tuple(round(0.1 * i, 1) for i in range(10))
RANDOM_SEEDS = 5
CRITERIA = (
    "relevance (LRP)",
    "relevance (LRP), global",
    "weight magnitude (L1)",
    "random (mean of 5)",
)


def trained_cnn(data: _digits.Digits, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = _digits.make_cnn(8)
    return _digits.train(model, data.x_train, data.y_train, epochs, seed=seed, progress=False)


def atlas_scores(model, data: _digits.Digits, folder: Path) -> dict[str, np.ndarray]:
    """The atlas of both convolutions over the training samples (each explained for its
    label): per layer its `class_relevance` averaged over the classes."""
    training = torch.utils.data.TensorDataset(data.x_train, data.y_train)
    atlas = concepts.atlas(
        model,
        training,
        composites.epsilon_plus(),
        list(LAYERS),
        folder / "atlas.zarr",
        k=8,
        target="label",
        batch_size=256,
        progress=False,
    )
    return {layer: np.nanmean(atlas.class_relevance(layer), axis=0) for layer in LAYERS}


def curves(model, data: _digits.Digits, fractions) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as folder:
        relevance = atlas_scores(model, data, Path(folder))
    magnitude = concepts.weight_magnitude(model, LAYERS)
    generator = np.random.default_rng(0)
    random_tables = [
        {layer: generator.random(len(relevance[layer])) for layer in LAYERS}
        for _ in range(RANDOM_SEEDS)
    ]
    x, y = data.x_test, data.y_test
    rows = {name: [] for name in CRITERIA}
    for fraction in fractions:
        rows["relevance (LRP)"].append(
            _digits.accuracy(concepts.prune(model, relevance, fraction), x, y)
        )
        rows["relevance (LRP), global"].append(
            _digits.accuracy(concepts.prune(model, relevance, fraction, scope="global"), x, y)
        )
        rows["weight magnitude (L1)"].append(
            _digits.accuracy(concepts.prune(model, magnitude, fraction), x, y)
        )
        rows["random (mean of 5)"].append(
            float(
                np.mean(
                    [
                        _digits.accuracy(concepts.prune(model, table, fraction), x, y)
                        for table in random_tables
                    ]
                )
            )
        )
    return rows


def table(fractions, rows: dict[str, list[float]]) -> str:
    header = "| pruned fraction | " + " | ".join(rows) + " |"
    lines = [header, "|" + " --- |" * (len(rows) + 1)]
    for i, fraction in enumerate(fractions):
        cells = " | ".join(f"{100 * values[i]:.1f}%" for values in rows.values())
        lines.append(f"| {fraction:.1f} | {cells} |")
    return "\n".join(lines)


def figure(fractions, rows, path: Path) -> None:
    from matplotlib.figure import Figure

    from lrpfn import image

    plot = Figure(figsize=(5.5, 3.6))
    axis = plot.subplots()
    for (name, values), marker in zip(rows.items(), "oDsx", strict=True):
        axis.plot(fractions, [100 * v for v in values], marker=marker, label=name)
    axis.set_xlabel("fraction of channels removed (each convolution)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    image.finish_figure(plot, path, "digits CNN: pruning by relevance vs. by weight magnitude")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--models", type=int, default=3, help="trained with seeds 0, 1, ...")
    parser.add_argument("--smoke", action="store_true", help="one model, 2 epochs, 3 fractions")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--results", default=str(HERE / "RESULTS_pruning.md"))
    parser.add_argument("--figure", default=str(HERE.parent / "docs" / "img" / "pruning.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = _digits.load_digits()
    fractions = (0.0, 0.5, 0.9) if args.smoke else FRACTIONS
    runs = [
        curves(trained_cnn(data, 2 if args.smoke else args.epochs, seed), data, fractions)
        for seed in range(1 if args.smoke else args.models)
    ]
    rows = {name: list(np.mean([run[name] for run in runs], axis=0)) for name in CRITERIA}
    text = table(fractions, rows)
    print(text)
    if args.no_write:
        return
    command = "python benchmarks/prune_curve.py" + (" --smoke" if args.smoke else "")
    Path(args.results).write_text(
        "# Pruning by relevance vs. by weight magnitude (digits CNN)\n\n"
        f"`{command}`: the mean test accuracy of {len(runs)} CNNs (trained for "
        f"{args.epochs} epochs with seeds 0..{len(runs) - 1}) on {len(data.x_test)} held-out "
        "digits. Each column but `global` removes the same fraction of channels from each "
        "of the two convolutions (16 and 32 channels); `global` removes the lowest "
        "normalised relevance scores of both layers together. No fine-tuning after "
        "pruning.\n\n" + text + "\n"
    )
    figure(fractions, rows, Path(args.figure))
    print(f"wrote {args.results} and {args.figure}")


if __name__ == "__main__":
    main()
