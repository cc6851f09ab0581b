"""Throughput of `lrpfn.datasets.explain`: one process with 2 threads against 2 ranks of
`torchrun` with 1 thread each, and the share of the run spent writing the Zarr store.

    python benchmarks/bench_datasets.py                 # resnet18, 512 images of 224
    python benchmarks/bench_datasets.py --images 64     # a quick look
    python benchmarks/bench_datasets.py --device cuda   # one process / rank per GPU

The model is torchvision's resnet18 with random weights (seed 0), explained with
`composites.epsilon_plus()` in batches (= store chunks) of 32; the data are generated
images, 3 x 224 x 224, each drawn from a generator seeded by its index (reading is not
what is measured). Each configuration runs once, in a fresh process (or `torchrun`), into
a fresh store, one after the other in this one invocation:

- "explain s": the longest rank's time over its chunks (reading, explaining, writing),
  from `Summary.seconds`; "wall s" adds the start (imports, capture, the store's creation,
  the ranks' meeting) as seen from outside.
- "write %": the largest share of a rank's chunk time spent writing the store
  (`Summary.write_fraction`).
- "speed-up": the 1-process explain time over this configuration's (same invocation).

With `--repeats R` each configuration runs R times, in rotating order (1 then 2 ranks,
then 2 then 1, ...), and the medians are shown.
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
BATCH = 32


class GeneratedImages(torch.utils.data.Dataset):
    """`count` images `(3, size, size)`, standard normal, image i from a generator seeded
    by i; labels i % 1000."""

    def __init__(self, count: int, size: int = 224) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(index)
        return torch.randn(3, self.size, self.size, generator=generator), index % 1000


def worker(out: str, images: int, threads: int, device: str, report: str) -> None:
    """One process or rank: explain the generated images into `out`; rank 0 writes the
    summary to `report` as JSON."""
    import torchvision

    from lrpfn import composites, datasets

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    summary = datasets.explain(
        model, GeneratedImages(images), composites.epsilon_plus(), out, batch_size=BATCH,
        device=device, model_name="torchvision:resnet18 (random, seed 0)",
        data_name=f"{images} generated 224x224 images", progress=False,
    )  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        Path(report).write_text(
            json.dumps({"seconds": summary.seconds, "write_fraction": summary.write_fraction})
        )


def run(ranks: int, threads: int, images: int, device: str, folder: Path) -> dict:
    out, report = folder / f"store_{ranks}x{threads}.zarr", folder / f"report_{ranks}.json"
    shutil.rmtree(out, ignore_errors=True)
    arguments = [str(HERE), "--worker", str(out), "--images", str(images),
                 "--threads", str(threads), "--device", device, "--report", str(report)]  # fmt: skip
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    subprocess.run(launcher + arguments, check=True, env=environment)
    wall = time.perf_counter() - began
    result = json.loads(report.read_text())
    return {"wall": wall, "explain": max(result["seconds"]), "write": result["write_fraction"]}


def identical(folder: Path, first: str, second: str) -> bool:
    import numpy as np
    import zarr

    a, b = zarr.open(str(folder / first), mode="r"), zarr.open(str(folder / second), mode="r")
    return all(np.array_equal(a[k][:], b[k][:], equal_nan=True) for k in ("relevance", "logits"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per configuration, in rotating order"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE.parent.parent))
        worker(args.worker, args.images, args.threads, args.device, args.report)
        return
    print(f"# lrpfn.datasets.explain throughput, {today()}\n")
    print(machine_description(args.device, 2) + "\n")
    print(
        f"resnet18, epsilon_plus, {args.images} images 3x224x224, batch {BATCH}, "
        f"median of {args.repeats} run(s) per configuration\n"
    )
    configurations = ((1, 2), (2, 1))
    results: dict[tuple[int, int], list[dict]] = {c: [] for c in configurations}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for repetition in range(args.repeats):  # rotating order: drifts hit both alike
            shift = repetition % len(configurations)
            for ranks, threads in configurations[shift:] + configurations[:shift]:
                result = run(ranks, threads, args.images, args.device, folder)
                results[ranks, threads].append(result)
        same = identical(folder, "store_1x2.zarr", "store_2x1.zarr")
    medians = {
        c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in results.items()
    }
    baseline = medians[configurations[0]]["explain"]
    rows = [
        [
            f"{ranks} process{'es' if ranks > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
            f"{m['wall']:.1f}", f"{m['explain']:.1f}", f"{args.images / m['explain']:.2f}",
            f"{100 * m['write']:.1f}", f"{baseline / m['explain']:.2f}",
        ]
        for (ranks, threads), m in medians.items()
    ]  # fmt: skip
    header = ["configuration", "wall s", "explain s", "images / s", "write %", "speed-up"]
    print(markdown_table(header, rows))
    print(f"\nstores bit-identical (relevance, logits): {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
