"""The concept atlas (`lrpfn.concepts.atlas`) against zennit-crp 0.6's
`FeatureVisualization.run`, on the same model, data and machine, side by side; the share
of the atlas's time spent writing its store; 2 ranks of `torchrun` against 1 process.

    python benchmarks/bench_atlas.py                       # vgg16, 128 images of 64x64
    python benchmarks/bench_atlas.py --images 32 --no-write   # a quick look
    python benchmarks/bench_atlas.py --device cuda --size 224 --images 512

The model is torchvision's vgg16 with random weights (seed 0); three layers
(`features.21`, `features.28`, `classifier.0`); EpsilonPlusFlat in both libraries
(`lrpfn.composites.epsilon_plus_flat()`, zennit's `EpsilonPlusFlat`); each sample's label
explained; batches of 32; k = 40 (zennit-crp's fixed sample size). The data are generated
images, each drawn from a generator seeded by its index. Each configuration runs once per
repetition in a fresh process (or `torchrun`), one after the other in this invocation:

- "lrpfn atlas": 1 process x 2 threads; the four orderings (relevance and activation, sum
  and max) of the three layers in one pass, written into a Zarr store.
- "zennit-crp run": 1 process x 2 threads; `FeatureVisualization.run` with
  `max_target="sum"`, which gives the relevance and activation orderings by sum; the
  orderings by max need a second run (`max_target="max"`): "the 4 orderings" adds the
  two measured runs.
- "lrpfn atlas, 2 ranks": `torchrun --nproc_per_node=2`, 1 thread each.

"run s" is the time of the call itself (`atlas(...)` or `run(...)`, data reading
included) measured inside the process; "write %" the largest share of a rank's chunk time
spent writing the store (from the store's record of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import machine_description, markdown_table, today

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "RESULTS_atlas.md"
BATCH = 32
K = 40
LAYERS = ("features.21", "features.28", "classifier.0")


class GeneratedImages(torch.utils.data.Dataset):
    """`count` images `(3, size, size)`, standard normal, image i from a generator seeded
    by i; labels i % 1000."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = int(index)  # zennit-crp passes NumPy integers
        generator = torch.Generator().manual_seed(index)
        return torch.randn(3, self.size, self.size, generator=generator), index % 1000


def _model(device: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval().to(device)


def worker(method: str, out: str, images: int, size: int, device: str, report: str) -> None:
    """One process or rank: run `method` into `out`; rank 0 writes its timing to `report`."""
    data = GeneratedImages(images, size)
    model = _model(device)
    began = time.perf_counter()
    if method == "lrpfn":
        from lrpfn import composites, concepts

        concepts.atlas(
            model, data, composites.epsilon_plus_flat(), list(LAYERS), out, k=K,
            target="label", batch_size=BATCH, device=device, progress=False,
        )  # fmt: skip
    else:
        import zennit.composites as zc
        from crp.attribution import CondAttribution
        from crp.concepts import ChannelConcept
        from crp.visualization import FeatureVisualization

        layer_map = {layer: ChannelConcept() for layer in LAYERS}
        reduction = method.split("-")[1]  # "crp-sum" or "crp-max"
        visualization = FeatureVisualization(
            CondAttribution(model), data, layer_map, path=out, max_target=reduction
        )
        visualization.run(zc.EpsilonPlusFlat(), 0, images, batch_size=BATCH, checkpoint=10**6)
    seconds = time.perf_counter() - began
    if int(os.environ.get("RANK", "0")) == 0:
        result = {"seconds": seconds, "write": 0.0}
        if method == "lrpfn":
            import zarr

            run = zarr.open_group(out, mode="r").attrs["lrpfn"]["runs"][-1]
            result["write"] = max(
                w / s for w, s in zip(run["write_seconds"], run["seconds"], strict=True)
            )
        Path(report).write_text(json.dumps(result))


def run(method: str, ranks: int, threads: int, args, folder: Path) -> dict:
    out = folder / f"{method}_{ranks}"
    report = folder / f"{method}_{ranks}.json"
    shutil.rmtree(out, ignore_errors=True)
    arguments = [str(HERE), "--worker", method, "--out", str(out), "--images",
                 str(args.images), "--size", str(args.size), "--device", args.device,
                 "--report", str(report)]  # fmt: skip
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(launcher + arguments, check=True, env=environment, capture_output=True)
    return json.loads(report.read_text())


def agree(folder: Path) -> str:
    """Whether the 1- and 2-rank stores hold the same top-k, and how far the atlas's
    relevance-sum top-40 scores lie from zennit-crp's (float32 here, where ties and
    rounding may order equal scores differently; tests/test_atlas_oracle.py checks the
    indices in float64)."""
    import numpy as np
    import zarr

    one, two = (zarr.open_group(str(folder / f"lrpfn_{r}"), mode="r") for r in (1, 2))
    same = all(
        np.array_equal(one[f"layers/{layer}/{ordering}/indices"][...],
                       two[f"layers/{layer}/{ordering}/indices"][...])
        for layer in LAYERS
        for ordering in ("relevance_sum", "relevance_max", "activation_sum", "activation_max")
    )  # fmt: skip
    differences = []
    for layer in LAYERS:
        for ordering, prefix in (("relevance_sum", "RelMax"), ("activation_sum", "ActMax")):
            theirs = np.load(folder / "crp-sum_1" / f"{prefix}_sum_normed" / f"{layer}_rel.npy").T
            ours = one[f"layers/{layer}/{ordering}/scores"][...]
            scale = max(float(np.abs(theirs).max()), 1e-30)
            differences.append(float(np.abs(ours - theirs).max()) / scale)
    return (
        f"1 and 2 ranks, identical top-k (all orderings): {'yes' if same else 'no'}; the "
        f"atlas's top-40 scores (relevance and activation, sum) against zennit-crp's: largest "
        f"difference {max(differences):.1e} of the largest score (float32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only, no RESULTS file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE.parent.parent))
        worker(args.worker, args.out, args.images, args.size, args.device, args.report)
        return
    configurations = (("lrpfn", 1, 2), ("crp-sum", 1, 2), ("crp-max", 1, 2), ("lrpfn", 2, 1))
    results: dict[tuple, list[dict]] = {c: [] for c in configurations}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for repetition in range(args.repeats):  # rotating order: drifts hit all alike
            shift = repetition % len(configurations)
            for configuration in configurations[shift:] + configurations[:shift]:
                results[configuration].append(run(*configuration, args, folder))
        agreement = agree(folder)
    medians = {
        c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()
    }
    crp_seconds = medians[("crp-sum", 1, 2)]["seconds"]
    medians[("crp-both", 1, 2)] = {
        "seconds": crp_seconds + medians[("crp-max", 1, 2)]["seconds"],
        "write": 0.0,
    }
    del medians[("crp-max", 1, 2)]
    one_rank = medians[("lrpfn", 1, 2)]["seconds"]
    crp_both = medians[("crp-both", 1, 2)]["seconds"]
    names = {("lrpfn", 1, 2): "lrpfn atlas (4 orderings), 1 process x 2 threads",
             ("crp-sum", 1, 2): "zennit-crp run (the 2 sum orderings), 1 process x 2 threads",
             ("crp-both", 1, 2): "zennit-crp, the 4 orderings (a sum and a max run), 1 x 2",
             ("lrpfn", 2, 1): "lrpfn atlas (4 orderings), torchrun 2 ranks x 1 thread"}  # fmt: skip
    rows = [
        [names[c], f"{m['seconds']:.1f}", f"{args.images / m['seconds']:.2f}",
         f"{100 * m['write']:.1f}" if c[0] == "lrpfn" else "-",
         f"{crp_seconds / m['seconds']:.2f}", f"{crp_both / m['seconds']:.2f}",
         f"{one_rank / m['seconds']:.2f}"]
        for c, m in medians.items()
    ]  # fmt: skip
    header = ["configuration", "run s", "images / s", "write %", "crp sum run / this",
              "crp 4 orderings / this", "1 process / this"]  # fmt: skip
    text = "\n".join([
        f"# The concept atlas against zennit-crp, {today()}", "",
        machine_description(args.device, 2), "",
        f"vgg16 (random weights), layers {', '.join(LAYERS)}, EpsilonPlusFlat, labels "
        f"explained, {args.images} generated images 3x{args.size}x{args.size}, batch {BATCH}, "
        f"k = {K}, median of {args.repeats} run(s) per configuration, one invocation "
        f"(`python benchmarks/bench_atlas.py --images {args.images} --size {args.size} "
        f"--repeats {args.repeats}`)", "",
        markdown_table(header, rows), "", agreement, "",
    ])  # fmt: skip
    print(text)
    if not args.no_write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
