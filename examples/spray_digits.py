"""Spectral relevance analysis (SpRAy) finds a Clever-Hans strategy in the digits.

Half of the digits 3 carry a tag: a bright 2x2 patch in the top-left corner, where no
digit has ink. A CNN trained on these data learns that the tag means "3". The whole data
set is explained into a Zarr store with `lrpfn.datasets.explain`; SpRAy on the class 3
then separates the heatmaps that look at the tag from those that look at the digit, and
the printed table shows how the clusters line up with the tag.

    python examples/spray_digits.py                   # writes out/spray/*.png
    python examples/spray_digits.py --smoke           # seconds
    torchrun --nproc_per_node=2 examples/spray_digits.py   # the explaining on 2 ranks

Writes `OUT/digits.zarr`, `OUT/embedding.png` (the Laplacian's eigenvalues and a t-SNE
embedding of the heatmaps) and `OUT/cluster_means.png` (each cluster's mean heatmap).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits

from lrpfn import composites, datasets

CLASS = 3


class TaggedDigits(torch.utils.data.Dataset):
    """The digits, with a bright 2x2 patch in the top-left corner of every other 3."""

    def __init__(self) -> None:
        digits = datasets.Digits()
        self.images, self.labels = digits.images.clone(), digits.labels
        threes = torch.nonzero(self.labels == CLASS)[:, 0]
        self.tagged = torch.zeros(len(self.labels), dtype=torch.bool)
        self.tagged[threes[::2]] = True
        self.images[self.tagged, :, :2, :2] = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/spray", help="folder for the store and figures")
    parser.add_argument("--figures", help="folder for the figures (default: --out)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    if args.smoke:
        args.epochs = 1
    data = TaggedDigits()
    out = Path(args.out)
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    model = _digits.make_cnn(size=8)
    weights = out / "model.pt"
    if rank == 0:
        _digits.train(model, data.images, data.labels, args.epochs, progress=not args.smoke)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
        shutil.rmtree(out / "digits.zarr", ignore_errors=True)  # a new model: a new store
    _wait_for_rank_zero()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    print(
        f"accuracy {_digits.accuracy(model, data.images, data.labels):.3f}"
    ) if rank == 0 else None

    store = out / "digits.zarr"
    datasets.explain(
        model, data, composites.epsilon_plus(), store, target="label", batch_size=128,
        model_name="spray_digits CNN", data_name="digits, every other 3 tagged",
        progress=not args.smoke,
    )  # fmt: skip
    _leave()
    if rank != 0:
        return
    result = datasets.spray(store, CLASS, args.clusters, by="label", n_neighbors=10)
    tagged = data.tagged[torch.from_numpy(result.rows)].numpy()
    print(f"SpRAy of the class {CLASS}: {len(result.rows)} heatmaps")
    print("eigenvalues:", np.array2string(result.eigenvalues[:6], precision=3))
    for cluster in range(args.clusters):
        inside = result.clusters == cluster
        print(f"cluster {cluster}: {inside.sum():4d} samples, {tagged[inside].mean():.0%} tagged")
    title = f"SpRAy, digit {CLASS} (every other one tagged top-left)"
    for path in result.save_figures(args.figures or out, title):
        print(f"wrote {path}")


def _wait_for_rank_zero() -> None:
    """Under torchrun: the other ranks wait until rank 0 has trained and saved the model."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        dist.barrier()


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
