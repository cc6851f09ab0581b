"""Compile time and speed of the compiled walk (`lrpfn.prepare(..., compile=True)`).

    python benchmarks/bench_compile.py --threads 2            # resnet50 and vgg16, batch 8 and 1
    python benchmarks/bench_compile.py --models resnet18 --batches 1 --size 64 --no-write

Models are torchvision builders with random weights (seed 0) at 224 x 224. Per model and
batch, in one process:

- compile s: the first call of `lrpfn.lrp` on a plan prepared with `compile=backend` (it
  records the forward and the walk with `make_fx`, compiles both and runs them once);
  the backend's one-time start-up (for inductor, loading its C++ tool chain) is paid
  before, on a trivial function, and reported apart;
- the median call time, interleaved (one call of each per repetition, rotating order,
  after one warm-up round, `common.interleaved_medians`), of the compiled plan, the
  plain plan (same rules, `compile=False`) and the input gradient (forward plus the
  gradient of the target logits, on a frozen copy);
- the largest difference between the compiled and the plain relevance, relative to the
  plain relevance's largest magnitude (float32).

Inductor caches compiled code on disk; the script points that cache at a fresh temporary
folder (unless `--keep-cache`), so "compile s" is the cost of a first use.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

if "--keep-cache" not in sys.argv:  # before torch reads it
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lrpfn_inductor_")

import torch
import torchvision
from common import (
    configure_threads,
    interleaved_medians,
    machine_description,
    markdown_table,
    revision,
    today,
)

import lrpfn
from lrpfn import composites, rules

HERE = Path(__file__).resolve().parent
RULES = {
    "epsilon": lambda: rules.Epsilon(1e-6),
    "epsilon_gamma_box": lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0),
}


def backend_start_up(backend: str) -> float:
    """Seconds for the backend's first compile of a trivial function (one-time costs)."""
    start = time.perf_counter()
    torch.compile(lambda x: torch.relu(x) + 1, backend=backend)(torch.ones(4))
    return time.perf_counter() - start


def bench(name: str, batch: int, size: int, rule: str, backend: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    plain = lrpfn.prepare(model, RULES[rule](), example_input=x)
    compiled = lrpfn.prepare(model, RULES[rule](), example_input=x, compile=backend)
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    fast = lrpfn.lrp(compiled, x)
    compile_seconds = time.perf_counter() - start
    compile_cpu = _cpu_seconds() - start_cpu
    reference = lrpfn.lrp(plain, x)
    difference = float((fast - reference).abs().max() / reference.abs().max())

    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        output = frozen(x)
    seed = torch.zeros_like(output).scatter_(1, output.argmax(1, keepdim=True), 1.0)

    def gradient():
        leaf = x.detach().requires_grad_()
        return torch.autograd.grad(frozen(leaf), leaf, seed)[0]

    medians = interleaved_medians(
        {
            "compiled": lambda: lrpfn.lrp(compiled, x),
            "plain": lambda: lrpfn.lrp(plain, x),
            "gradient": gradient,
        },
        repeats=repeats,
        warmup=1,
        device="cpu",
    )
    assert compiled.compiled.compiled_signatures == 2, "the timed calls recompiled"
    return {
        "model": name,
        "batch": batch,
        "rules": rule,
        "compile s": compile_seconds,
        "compile cpu s": compile_cpu,
        "load": os.getloadavg()[0],
        **{f"{key} s": value for key, value in medians.items()},
        "difference": difference,
    }


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def table(rows: list[dict]) -> str:
    header = [
        "model", "batch", "rules", "compile s (first call)", "compile CPU s", "compiled s", "plain s",
        "gradient s", "plain / compiled", "compiled × gradient", "plain × gradient",
        "max |R_c - R_p| / max |R_p|", "load (1 min) after",
    ]  # fmt: skip
    cells = [
        [
            row["model"],
            row["batch"],
            row["rules"],
            f"{row['compile s']:.1f}",
            f"{row['compile cpu s']:.1f}",
            f"{row['compiled s']:.3f}",
            f"{row['plain s']:.3f}",
            f"{row['gradient s']:.3f}",
            f"{row['plain s'] / row['compiled s']:.2f}",
            f"{row['compiled s'] / row['gradient s']:.2f}",
            f"{row['plain s'] / row['gradient s']:.2f}",
            f"{row['difference']:.1e}",
            f"{row['load']:.1f}",
        ]
        for row in rows
    ]
    return markdown_table(header, cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 1])
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=["epsilon"])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--keep-cache", action="store_true", help="use inductor's disk cache")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS_compile.md")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    machine = f"{machine_description('cpu', args.threads)}; lrpfn commit {revision()}"
    command = shlex.join(["python", "benchmarks/bench_compile.py", *(argv or sys.argv[1:])])
    start_up = backend_start_up(args.backend)
    print(f"{args.backend} start-up: {start_up:.1f} s", file=sys.stderr, flush=True)
    cache = "inductor's disk cache kept" if args.keep_cache else "a fresh inductor disk cache"
    header = (
        f"# The compiled walk: compile time and speed\n\n"
        f"Machine: {machine}.  \nDate: {today()}.  \nCommand: `{command}`.  \n"
        f"Backend: {args.backend!r}, start-up {start_up:.1f} s (a trivial function's first "
        f"compile, paid once per process, not in the table), {cache}.  \n"
        f"Input: batch x 3 x {args.size} x {args.size}, random weights (seed 0), float32; "
        f"median of {args.repeats} interleaved repetitions after one warm-up round.  \n"
        f"Compile s: the first call of the compiled plan (record the forward and the walk, "
        f"compile both, run them), wall-clock; compile CPU s: CPU time of this process and "
        f"its finished children meanwhile (less sensitive to other jobs on the machine; "
        f"inductor's live compile workers not counted).\n\n"
    )
    rows = []
    for batch in args.batches:
        for name in args.models:
            for rule in args.rules:
                print(f"{name}, batch {batch}, {rule} ...", file=sys.stderr, flush=True)
                rows.append(bench(name, batch, args.size, rule, args.backend, args.repeats))
                print(table(rows[-1:]), file=sys.stderr, flush=True)
                if not args.no_write:  # after every row: a run stopped early keeps its rows
                    args.output.write_text(header + table(rows) + "\n")
    print(header + table(rows))


if __name__ == "__main__":
    main()
