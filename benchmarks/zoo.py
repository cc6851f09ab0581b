"""Which torchvision models lrpfn explains, with random weights; writes docs/models.md.

    python benchmarks/zoo.py                         # every model in ZOO (several minutes)
    python benchmarks/zoo.py --models resnet18 --no-write

See SETUP for what is run.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from common import (
    configure_threads,
    machine_description,
    markdown_table,
    revision,
    table_cell,
    today,
)
from zoo_timm import without_biases

import lrpfn
from lrpfn import composites
from lrpfn.errors import ConservationWarning, LRPError

ROOT = Path(__file__).resolve().parent.parent
ZOO = (
    "alexnet",
    *(f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")),
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "googlenet",
    "inception_v3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_v2_s",
    "shufflenet_v2_x1_0",
    "squeezenet1_0",
    "squeezenet1_1",
    "mnasnet0_5",
    "regnet_y_400mf",
    "convnext_tiny",
    "vit_b_16",
    "swin_t",
    "maxvit_t",
)
BUILD_ARGUMENTS = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}
SIZES = {"inception_v3": 299}
BOUND = 3.0
SETUP = """Each model is built with `weights=None` after `torch.manual_seed(0)` (googlenet
and inception_v3 without auxiliary heads and with PyTorch's default initialisation), put
in eval mode and explained at one image (224 x 224, inception_v3 299 x 299; seeded normal
noise clamped to the ZBox bounds) under `composites.epsilon_gamma_box(low=-3, high=3)`,
for the model's top class. Untrained BatchNorm layers have identity statistics (mean 0,
variance 1, weight 1, bias 0), so a folded BatchNorm adds no bias; random weights can give
very small activations and logits (down to 1e-14 here). ViT's head, which torchvision
initialises to zero, gets normal weights (std 0.02) so that its logits are not all zero."""
COLUMNS = (
    "model",
    "traced",
    "explained",
    "ΣR",
    "logit",
    "ΣR / logit",
    "LRP-0, no biases: |ΣR / logit - 1|",
    "s / image",
)


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """The torchvision model `name` with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None, **BUILD_ARGUMENTS.get(name, {}))
    if name.startswith("vit_"):  # torchvision initialises the head to zero: logits all 0
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval()


def image(size: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One seeded noise image within the ZBox bounds."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, size, size, generator=generator, dtype=dtype).clamp(-BOUND, BOUND)


def conservation(model: torch.nn.Module, x: torch.Tensor) -> float:
    """ΣR / logit of LRP-0 on the model without additive parameters: 1 up to rounding, as
    every step of LRP-0 on a bias-free layer conserves relevance (`cp_lrp(epsilon=0)`: LRP-0
    on every linear node, attention weights and gates held constant; for a CNN it is
    `Epsilon(0)` everywhere)."""
    model = without_biases(model)
    with torch.no_grad():
        output = model(x)
    target = int(output.argmax())
    relevance = lrpfn.lrp(model, x, composites.cp_lrp(epsilon=0.0), target=target)
    return float(relevance.sum() / output[0, target])


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [""]
    return f"no: {type(error).__name__}: {lines[0][:200]}"


def zoo_row(name: str, model: torch.nn.Module, size: int, repeats: int = 3) -> dict:
    """Trace and explain `model` at one `size` x `size` image; the row of the table.

    Keys: the `COLUMNS` ("traced" and "explained" are "yes" or "no: <first line of the
    error>"; the numbers are None when not explained).
    """
    # the ΣR / logit column reports what ConservationWarning says (under pytest: no error)
    warnings.filterwarnings("ignore", category=ConservationWarning)
    row = dict.fromkeys(COLUMNS)
    row["model"] = name
    try:
        torch.fx.symbolic_trace(model)
        row["traced"] = "yes"
    except Exception as error:  # fx raises many types
        row["traced"] = _reason(error)
    x = image(size)
    rules = composites.epsilon_gamma_box(low=-BOUND, high=BOUND)
    try:
        plan = lrpfn.prepare(model, rules)
        with torch.no_grad():
            output, canonical = model(x), plan.module(x)
        target = int(output.argmax())
        relevance = lrpfn.lrp(plan, x, target=target)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            lrpfn.lrp(plan, x, target=target)
            times.append(time.perf_counter() - start)
        conserved = conservation(model, x)
    except LRPError as error:
        row["explained"] = _reason(error)
        return row
    except Exception as error:  # not an lrpfn error: a bug to report, shown as such
        row["explained"] = f"{_reason(error)} (unexpected: not an lrpfn error)"
        return row
    difference = float((canonical - output).abs().max() / output.abs().max())
    if not bool(torch.isfinite(relevance).all()):
        row["explained"] = "no: the relevance is not finite"
    elif difference > 1e-4:
        row["explained"] = f"no: the canonical graph's output differs (rel. {difference:.1e})"
    else:
        row["explained"] = "yes"
    row["ΣR"] = float(relevance.sum())
    row["logit"] = float(output[0, target])
    # vit_b_16 starts its head at zero (logit 0 with random weights)
    row["ΣR / logit"] = row["ΣR"] / row["logit"] if row["logit"] else float("nan")
    row["LRP-0, no biases: |ΣR / logit - 1|"] = abs(conserved - 1.0)
    row["s / image"] = statistics.median(times)
    return row


def zoo_table(names: Sequence[str], repeats: int = 3) -> list[dict]:
    """One row per torchvision model name (see `zoo_row`)."""
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows.append(zoo_row(name, build(name), SIZES.get(name, 224), repeats))
    return rows


def markdown(rows: Sequence[dict], command: str, machine: str) -> str:
    explained = sum(row["explained"] == "yes" for row in rows)
    traced = sum(row["traced"] == "yes" for row in rows)
    header = f"""# Model coverage

Transformers (torchvision's ViT, Swin and MaxViT below, timm's ViT and DeiT, Hugging Face
language models) and their rules: [their own page](transformers.md).

lrpfn on torchvision's image classifiers with random weights: **{explained} of {len(rows)}
explained**, {traced} of {len(rows)} traced by `torch.fx.symbolic_trace`.

{SETUP}

Columns: *traced*: `torch.fx.symbolic_trace(model)` succeeds (else the error's first
line); *explained*: `lrpfn.lrp` returns a finite relevance and lrpfn's canonical graph
reproduces the model's output (relative difference at most 1e-4 in float32), else the
lrpfn error's first line; *ΣR*: the input relevance summed; *logit*: the explained
logit; *ΣR / logit*: their ratio. It is 1 only where no relevance is absorbed: biases
absorb some (the random classifiers and some convolutions have biases), and so do the
rules' stabilizers (1e-6) where activations are as small as they are in some of these
untrained models (logits of 1e-9 and below), so this ratio is no test of the library;
*LRP-0, no biases*: how far from 1 the same ratio is for LRP-0 (`composites.cp_lrp(epsilon=0)`:
`rules.Epsilon(0)` on every linear node, attention weights held constant as CP-LRP does) on
a copy of the model whose additive parameters are zero (biases, BatchNorm running means,
class tokens, position embeddings, relative position biases), which conserves relevance
exactly (so only float32 rounding remains: a test of the whole
traversal); *s / image*: seconds per `lrpfn.lrp` call (epsilon_gamma_box) on a prepared
plan, median of 3 after one warm-up call (on a machine shared with other jobs, as the
load average below says, these vary severalfold from run to run).

Command: `{command}`.  \nMachine: {machine}.  \nDate: {today()}.
"""
    table = markdown_table(COLUMNS, [[table_cell(row[key]) for key in COLUMNS] for row in rows])
    return header + "\n" + table + "\n"


_TIMM_BEGIN = "<!-- timm table: generated by benchmarks/zoo_timm.py"


def _timm_section(path: Path) -> str:
    """The timm section that benchmarks/zoo_timm.py wrote into `path`, kept as it is."""
    text = path.read_text() if path.exists() else ""
    return "\n" + text[text.index(_TIMM_BEGIN) :] if _TIMM_BEGIN in text else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), help="torchvision names")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per model")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "models.md")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    # the load and the code before this run: other jobs and commits may come during it
    machine = f"{machine_description('cpu', args.threads)}; lrpfn commit {revision()}"
    rows = zoo_table(args.models, args.repeats)
    command = shlex.join(["python", "benchmarks/zoo.py", *(argv or sys.argv[1:])])
    text = markdown(rows, command, machine)
    print(text)
    if not args.no_write:
        args.output.write_text(text + _timm_section(args.output))
        print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
