"""The fuzz campaign over real models: timm's zoo and its transformer families.

For each model of `zoo_timm.SAMPLE` (or those named), random weights (seed 0), each rule
set of `RULE_SETS`, float32 and float64, and `--inputs` random inputs per combination
(seeded normal noise at a random scale from 1e-2 to 1e1, a random batch of 1 or 2, random
targets): explain with `lrpfn.lrp` and count

- NaN: a non-finite relevance where the model's own output is finite;
- bare exceptions: anything raised that is not an `lrpfn.errors.LRPError` (a clear
  refusal, such as an op without a handler, is counted apart, as "refused");
- relevance growth: `ConservationWarning`s (informative: the warning names the rule set).

    python benchmarks/fuzz_zoo.py                                  # the whole sample
    python benchmarks/fuzz_zoo.py --models resnet18 repvgg_a0      # a bounded list
    python benchmarks/fuzz_zoo.py --write                          # RESULTS_fuzz.md
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import timm
import torch

import lrpfn
from lrpfn import composites
from lrpfn.errors import ConservationWarning, LRPError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_timm import IMAGE_SIZE_ARGUMENT, SAMPLE, SIZES

RULE_SETS = {
    "epsilon_plus": composites.epsilon_plus,
    "epsilon_gamma_box": lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "epsilon_alpha2_beta1": composites.epsilon_alpha2_beta1,
    "alpha2beta1 (key)": lambda: "alpha2beta1",
}
DTYPES = (torch.float32, torch.float64)
RESULTS = Path(__file__).resolve().parent / "RESULTS_fuzz.md"


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"img_size": 64} if name in IMAGE_SIZE_ARGUMENT else {}
    return timm.create_model(name, pretrained=False, num_classes=10, **options).eval()


def fuzz_model(name: str, inputs: int, generator: torch.Generator) -> dict:
    tally = {"runs": 0, "nan": 0, "bare": 0, "refused": 0, "grew": 0, "first": ""}
    model, size = build(name), SIZES.get(name, 64)
    for dtype in DTYPES:
        model = model.to(dtype)
        for rule_set, make in RULE_SETS.items():
            for _ in range(inputs):
                batch = int(torch.randint(1, 3, (), generator=generator))
                scale = 10 ** float(torch.empty(()).uniform_(-2, 1, generator=generator))
                x = torch.randn(batch, 3, size, size, generator=generator, dtype=dtype) * scale
                target = torch.randint(0, 10, (batch,), generator=generator)
                _run_one(model, x, make(), target, tally, f"{rule_set}, {dtype}")
    return tally


def _run_one(model, x, rules, target, tally, where) -> None:
    tally["runs"] += 1
    with torch.no_grad():
        finite_output = bool(torch.isfinite(model(x)).all())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            relevance = lrpfn.lrp(model, x, rules, target=target)
    except LRPError as error:
        tally["refused"] += 1
        tally["first"] = tally["first"] or f"refused ({where}): {str(error).splitlines()[0][:120]}"
        return
    except Exception as error:  # a bare exception: what the campaign hunts
        tally["bare"] += 1
        tally["first"] = f"{type(error).__name__} ({where}): {str(error).splitlines()[0][:120]}"
        return
    tally["grew"] += sum(issubclass(w.category, ConservationWarning) for w in caught)
    if finite_output and not bool(torch.isfinite(relevance).all()):
        tally["nan"] += 1
        tally["first"] = tally["first"] or f"NaN ({where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SAMPLE))
    parser.add_argument("--inputs", type=int, default=2, help="random inputs per combination")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(args.seed)
    rows, totals, began = [], {"runs": 0, "nan": 0, "bare": 0, "refused": 0, "grew": 0}, time.time()
    for name in args.models:
        start = time.time()
        tally = fuzz_model(name, args.inputs, generator)
        for key in totals:
            totals[key] += tally[key]
        row = (f"| {name} | {tally['runs']} | {tally['nan']} | {tally['bare']} | "
               f"{tally['refused']} | {tally['grew']} | {time.time() - start:.0f} | {tally['first']} |")  # fmt: skip
        print(row, flush=True)
        rows.append(row)
    summary = (
        f"{len(args.models)} models, {totals['runs']} explanations: {totals['nan']} NaN, "
        f"{totals['bare']} bare exceptions, {totals['refused']} refused with an lrpfn error, "
        f"{totals['grew']} ConservationWarnings; {time.time() - began:.0f} s"
    )
    print(summary)
    if args.write:
        _write(args, rows, summary)
    return 1 if totals["nan"] or totals["bare"] else 0


def _write(args, rows, summary) -> None:
    header = (
        "| model | runs | NaN | bare exceptions | refused | ConservationWarnings | s | first note |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    command = "python benchmarks/fuzz_zoo.py --write --inputs " + str(args.inputs)
    if args.models != list(SAMPLE):
        command += " --models " + " ".join(args.models)
    RESULTS.write_text(
        "# Fuzz campaign over real models\n\n"
        f"Command: `{command}` (seed {args.seed}; torch {torch.__version__}, timm "
        f"{timm.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).\n"
        f"Rule sets: {', '.join(RULE_SETS)}; dtypes float32 and float64; random inputs (normal "
        "noise at a random scale 1e-2..1e1, batch 1 or 2) and random targets.\n\n"
        f"**{summary}.**\n\n{header}\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
