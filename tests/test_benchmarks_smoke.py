"""The benchmark scripts' building blocks (benchmarks/zoo.py, benchmarks/common.py).

`make test` runs `benchmarks/bench_lrp.py --quick --no-write` itself; these tests check
the row format of the model-coverage table on tiny models, and that the measuring helpers
measure what they claim (call counts, a known allocation). No timing is asserted.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def benchmarks():
    """The benchmark scripts as modules (benchmarks/ is a folder of scripts, not a package)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("zoo"), importlib.import_module("common")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class Untraceable(Tiny):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            return super().forward(x)
        return super().forward(-x)


def test_zoo_row_of_an_explained_model_has_every_column_and_consistent_numbers(benchmarks):
    zoo, _ = benchmarks
    torch.manual_seed(0)
    model = Tiny().eval()
    row = zoo.zoo_row("tiny", model, size=8, repeats=1)
    assert tuple(row) == zoo.COLUMNS
    assert (row["model"], row["traced"], row["explained"]) == ("tiny", "yes", "yes")
    with torch.no_grad():
        logit = float(model(zoo.image(8)).max())
    assert row["logit"] == pytest.approx(logit, rel=1e-6)
    assert row["ΣR / logit"] == pytest.approx(row["ΣR"] / row["logit"])
    assert row["LRP-0, no biases: |ΣR / logit - 1|"] <= 1e-5  # conservation
    assert isinstance(row["s / image"], float)


def test_zoo_row_of_an_untraceable_model_says_why(benchmarks):
    zoo, _ = benchmarks
    row = zoo.zoo_row("untraceable", Untraceable().eval(), size=8, repeats=1)
    assert row["traced"].startswith("no: TraceError: symbolically traced variables")
    assert row["explained"].startswith("no: TraceError: torch.fx could not trace Untraceable")
    assert all(row[key] is None for key in zoo.COLUMNS[3:])


def test_zoo_markdown_has_one_table_line_per_model_with_every_column(benchmarks):
    zoo, _ = benchmarks
    rows = [
        zoo.zoo_row("tiny", Tiny().eval(), size=8, repeats=1),
        zoo.zoo_row("untraceable", Untraceable().eval(), size=8, repeats=1),
    ]
    text = zoo.markdown(rows, "python benchmarks/zoo.py --models tiny", machine="a test")
    assert "**1 of 2\nexplained**" in text
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + len(rows)  # header, separator, rows
    assert lines[2].startswith("| tiny | yes | yes |")
    assert lines[3].startswith("| untraceable | no: TraceError")
    assert all(line.count(" | ") == len(zoo.COLUMNS) - 1 for line in (lines[0], lines[2]))


def test_interleaved_medians_calls_each_method_warmup_plus_repeats_times(benchmarks):
    _, common = benchmarks
    calls = []
    methods = {name: functools.partial(calls.append, name) for name in "abc"}
    medians = common.interleaved_medians(methods, repeats=3, warmup=1, device="cpu")
    assert set(medians) == set("abc")
    assert calls[:3] == list("abc")  # the warm-up round
    assert calls[3:] == list("abcbcacab")  # one call each per repetition, rotating


def test_peak_memory_of_a_64_mib_allocation_is_about_64_mib(benchmarks):
    """A fresh process allocates and fills 16 Mi float32 values (64 MiB): its resident set
    grows by that much, plus little else (the allocator's bookkeeping)."""
    _, common = benchmarks
    mib = common.peak_memory_mib(functools.partial, torch.ones, 16 * 2**20, device="cpu")
    assert 63 <= mib <= 80
