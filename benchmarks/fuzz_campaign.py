"""A long fuzz campaign: the property of `tests/test_fuzz.py` over 10,000+ cases.

Each case is a generated network (sequential or residual, with dead ReLUs, zero or
sparse weights), an adversarial input (all zero, tiny 1e-30, large 1e30 or mixed
magnitudes, float64 or float32), drawn by Hypothesis, and a rule or composite (each
in turn, so every rule gets an equal share of the cases). The
property: whenever the model's output is finite, the relevance at every graph node is
finite, and conserved where the rule must conserve (`check_fuzz_case`). Failures are
counted, not raised, so the whole campaign runs; the first failing case is printed
with the code that rebuilds it.

    python benchmarks/fuzz_campaign.py                # 10,000 cases
    python benchmarks/fuzz_campaign.py --cases 50000 --seed 3
    python benchmarks/fuzz_campaign.py --quick        # 200 cases, a smoke run
    python benchmarks/fuzz_campaign.py --zoo [--models ...]   # real models: fuzz_zoo.py

`--zoo` runs the campaign over timm's zoo and its transformer families instead (random
weights, several rule sets including epsilon_gamma_box and the alpha2beta1 key, random
inputs and targets, float32 and float64; `benchmarks/fuzz_zoo.py`, whose last run is in
benchmarks/RESULTS_fuzz.md).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from strategies import adversarial_cases  # noqa: E402
from test_fuzz import MAPPINGS, check_fuzz_case  # noqa: E402


def run(cases: int, random_seed: int, progress: int) -> dict:
    """Run the property on `cases` drawn (case, rule) pairs; return the tallies."""
    tally = {
        "cases": 0,
        "checked": 0,
        "skipped": 0,
        "failures": 0,
        "first": None,
        "by_rule": collections.Counter(),
        "by_kind": collections.Counter(),
    }
    names = sorted(MAPPINGS)
    start = time.perf_counter()

    @seed(random_seed)
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: failures are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    @given(adversarial_cases())
    def campaign(case):
        name = names[tally["cases"] % len(names)]  # round robin: every rule equally often
        tally["cases"] += 1
        try:
            applies = check_fuzz_case(case, name)
        except Exception as error:  # an AssertionError, or an error lrpfn raised
            tally["failures"] += 1
            tally["by_rule"][name] += 1
            tally["by_kind"][_kind(error, case)] += 1
            if tally["first"] is None:
                tally["first"] = (name, case, f"{type(error).__name__}: {error}")
        else:
            tally["checked" if applies else "skipped"] += 1
        if progress and tally["cases"] % progress == 0:
            elapsed = time.perf_counter() - start
            print(
                f"  {tally['cases']} cases, {tally['failures']} failures, {elapsed:.0f} s",
                flush=True,
            )

    campaign()
    tally["seconds"] = time.perf_counter() - start
    return tally


def _kind(error: Exception, case) -> str:
    """A failure's class: what failed, in which dtype, at which input magnitude."""
    message = str(error)
    if "non-finite" in message:
        what = "non-finite relevance"
    elif "not conserved" in message:
        what = "not conserved"
    else:
        what = f"{type(error).__name__}: {message.splitlines()[0][:80]}"
    dtype = str(case.dtype).removeprefix("torch.")
    return f"{what}, {dtype}, {case.input.kind} input at {case.input.magnitude} magnitude"


def report(tally: dict) -> None:
    print(f"cases run: {tally['cases']}")
    print(f"  checked: {tally['checked']} (model output finite)")
    print(f"  skipped: {tally['skipped']} (model output itself not finite)")
    print(f"failures: {tally['failures']}")
    print(f"time: {tally['seconds']:.0f} s")
    if tally["failures"]:
        print("failures by rule:")
        for name, count in tally["by_rule"].most_common():
            print(f"  {name}: {count}")
        print("failures by kind:")
        for kind, count in tally["by_kind"].most_common():
            print(f"  {count} x {kind}")
        name, case, message = tally["first"]
        print("first failing example:")
        print(f"  rule: {name!r}")
        print(f"  case: {case!r}")
        print(f"  error: {message}")
        print("  rebuild it (from the repository root, with tests/ on sys.path):")
        print("    from strategies import *; from test_fuzz import check_fuzz_case")
        print(f"    case = build_case({case.network!r}, {case.input!r}, {case.dtype})")
        print(f"    check_fuzz_case(case, {name!r})")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if "--zoo" in arguments:
        import fuzz_zoo

        return fuzz_zoo.main([a for a in arguments if a != "--zoo"])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases to run (10000)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (0)")
    parser.add_argument("--quick", action="store_true", help="a 200-case smoke run")
    parser.add_argument("--progress", type=int, default=1000, help="report every N cases")
    args = parser.parse_args(argv)
    cases = 200 if args.quick else args.cases
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Using padding='same'")
    print(f"fuzz campaign: {cases} cases, seed {args.seed}, torch {torch.__version__}", flush=True)
    tally = run(cases, args.seed, args.progress)
    report(tally)
    return 1 if tally["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
