"""Cost of fitting patterns (`lrpfn.patterns.fit`) against plain forward passes.

    python benchmarks/bench_patterns.py            # 4096 and 16384 samples of 1 x 28 x 28
    python benchmarks/bench_patterns.py --quick    # 1024 and 4096 samples
    python benchmarks/bench_patterns.py --device cuda

The model is a small CNN for digit-sized images (conv 1->8 3x3, ReLU, max-pool, conv 8->16
3x3, ReLU, max-pool, dense 784->64, ReLU, dense 64->10; random weights, float32). The data
are generated uniform images in batches of 128, made batch by batch from a seed.

- Time: per data size, the same pre-generated batches (made before timing) go through a
  plain forward loop under `torch.no_grad()` and through `fit` with `kind="linear"` and
  `kind="positive"`; each method is called once per repetition in rotating order and the
  median is reported (`common.interleaved_medians`). "ratio" = fit time / forward time.
- Memory: per (size, method), a fresh process builds the model, warms the method up on one
  batch, resets the kernel's peak resident set size, then runs the method once over data
  generated lazily batch by batch (so that the data set itself is never in memory); the
  figure is the peak RSS during the call minus the RSS just before it
  (`common.peak_memory_mib`; on CUDA, `torch.cuda.max_memory_allocated` instead), as the
  median and range of three such processes (the CPU figure varies by some 20 MiB from
  process to process with what the allocator keeps between batches). It
  includes one batch of data, the activations of one forward pass, the float64 copies
  and the running sums; it should not grow with the number of samples.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from collections.abc import Callable, Iterator

import torch
from common import (
    configure_threads,
    interleaved_medians,
    machine_description,
    markdown_table,
    peak_memory_mib,
    today,
)
from torch import nn

import lrpfn.patterns

BATCH = 128
SIZES = (4096, 16384)
QUICK_SIZES = (1024, 4096)
KINDS = ("linear", "positive")
MEMORY_RUNS = 3


def small_cnn(device: str) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
        .eval()
        .to(device)
    )


class GeneratedDigits:
    """`samples` uniform 1 x 28 x 28 images in batches of `BATCH`, made on the fly."""

    def __init__(self, samples: int, device: str) -> None:
        self.samples, self.device = samples, device

    def __len__(self) -> int:
        return -(-self.samples // BATCH)

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        for start in range(0, self.samples, BATCH):
            size = min(BATCH, self.samples - start)
            yield torch.rand(size, 1, 28, 28, generator=generator).to(self.device)


def forward_all(model: nn.Module, data) -> None:
    with torch.no_grad():
        for x in data:
            model(x)


def make_method(method: str, samples: int, device: str, threads: int) -> Callable[[], object]:
    """Module level, for `peak_memory_mib`: the method over lazily generated data, warmed up."""
    configure_threads(threads)
    model = small_cnn(device)
    if method == "forward":
        forward_all(model, GeneratedDigits(BATCH, device))
        return lambda: forward_all(model, GeneratedDigits(samples, device))
    lrpfn.patterns.fit(model, GeneratedDigits(BATCH, device), method, progress=False)
    return lambda: lrpfn.patterns.fit(
        model, GeneratedDigits(samples, device), method, progress=False
    )


def measure(samples: int, device: str, threads: int, repeats: int) -> dict[str, dict]:
    model = small_cnn(device)
    batches = list(GeneratedDigits(samples, device))
    methods: dict[str, Callable[[], object]] = {"forward": lambda: forward_all(model, batches)}
    for kind in KINDS:
        methods[kind] = lambda kind=kind: lrpfn.patterns.fit(model, batches, kind, progress=False)
    seconds = interleaved_medians(methods, repeats=repeats, warmup=1, device=device)
    return {
        name: {
            "s": seconds[name],
            "MiB": sorted(
                peak_memory_mib(make_method, name, samples, device, threads, device=device)
                for _ in range(MEMORY_RUNS)
            ),
        }
        for name in methods
    }


def _memory(values: list[float]) -> str:
    """The median of the fresh-process runs, with their range."""
    return f"{statistics.median(values):.1f} ({values[0]:.1f}-{values[-1]:.1f})"


def report(results: dict[int, dict[str, dict]], command: str, device: str, threads: int) -> str:
    header = ["method", *(f"{n} samples: s" for n in results), "ratio to forward",
              *(f"{n} samples: peak MiB" for n in results)]  # fmt: skip
    rows = []
    for name in ("forward", *KINDS):
        times = [results[n][name]["s"] for n in results]
        ratios = [results[n][name]["s"] / results[n]["forward"]["s"] for n in results]
        label = name if name == "forward" else f"fit kind={name!r}"
        rows.append(
            [
                label,
                *(f"{t:.3f}" for t in times),
                " / ".join(f"{r:.1f}x" for r in ratios),
                *(_memory(results[n][name]["MiB"]) for n in results),
            ]
        )
    return "\n".join(
        [
            f"# lrpfn.patterns.fit ({today()})",
            "",
            f"`{command}`",
            "",
            machine_description(device, threads),
            "",
            f"Small CNN, 1 x 28 x 28 inputs, batches of {BATCH}, float32 model, float64 sums.",
            "",
            markdown_table(header, rows),
            "",
            f"Peak MiB: peak RSS of a fresh process during one call minus RSS before it "
            f"(data generated batch by batch), median (range) of {MEMORY_RUNS} processes; "
            "equal figures at both sizes mean memory does not grow with the number of "
            "samples. Times: medians of interleaved repetitions.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 and 4096 samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 5, quick 3)")
    arguments = parser.parse_args(argv)
    configure_threads(arguments.threads)
    sizes = QUICK_SIZES if arguments.quick else SIZES
    repeats = arguments.repeats or (3 if arguments.quick else 5)
    results = {}
    for samples in sizes:
        print(f"{samples} samples ...", file=sys.stderr, flush=True)
        results[samples] = measure(samples, arguments.device, arguments.threads, repeats)
    command = shlex.join(["python", "benchmarks/bench_patterns.py", *(argv or sys.argv[1:])])
    print(report(results, command, arguments.device, arguments.threads))


if __name__ == "__main__":
    main()
