"""Speed and peak memory of lrpfn against the input gradient (and, on request, zennit, captum).

    python benchmarks/bench_lrp.py                  # the issue-23 table: seven models, batch 1, 4, 8
    python benchmarks/bench_lrp.py --quick          # resnet18, batch 2 x 3 x 64 x 64 (a smoke run)
    python benchmarks/bench_lrp.py --device cuda    # on a GPU (writes benchmarks/RESULTS_cuda.md)
    python benchmarks/bench_lrp.py --models vgg16 --methods "zennit epsilon" "captum LRP"

Models are torchvision builders with random weights (seeded), at 224 x 224 for batch 1, 4
and 8 (`--batches`); vit_b_16 is explained with AttnLRP (`composites.attnlrp()`) in the
epsilon rows (the CNN composites do not apply to it). Per model and batch, every method is timed in the same run,
interleaved (one call of each per repetition, rotating order), as the median over
repetitions after one warm-up round:

- forward: the model under `torch.no_grad()`;
- gradient: forward plus the gradient of the target logits with respect to the input,
  on a copy of the model whose parameters do not require gradients;
- lrpfn with all-epsilon (`rules.Epsilon(1e-6)` on every node),
  `epsilon_gamma_box(low=-3, high=3)` and `epsilon_alpha2_beta1`, each on a `Plan`
  prepared once (the folded walk, `lrpfn.engine.folding`); on request (`--methods`)
  "lrpfn epsilon, plain walk", the same plan without folding;
- lrpfn epsilon, one-shot: `lrpfn.lrp(model, x, rules)`, the call users write first
  (capture, prepare and explain in one call);
- lrpfn epsilon, k targets: `target` of shape (batch, k), the top k classes; against
  its floor, lrpfn's own forward pass ("lrpfn forward") plus k times one target's
  backward walk ("lrpfn epsilon walk", on the kept forward values), timed in the same run;
- optional (`--methods`): zennit with the same rules on a frozen copy with its canonizer
  (VGGCanonizer / ResNetCanonizer; vgg and resnet only), captum's `LRP` on a copy.

"ΣR / logit" is the input relevance summed per sample over the explained logit, averaged
over the batch (1 for a conservative explanation of a model without biases). Peak memory
is measured per (model, batch, method) in a fresh process (see `common.peak_memory_mib`).
"Kept forward values" (`kept_values`) counts, per model and batch, the tensors lrpfn's
forward keeps for the walk against the tensors autograd saves for the input gradient
(`torch.autograd.graph.saved_tensors_hooks`), both without parameters.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from common import (
    configure_threads,
    device_name,
    interleaved_medians,
    machine_description,
    markdown_table,
    peak_memory_mib,
    revision,
    today,
)

import lrpfn
from lrpfn import composites, rules
from lrpfn.engine.folded_walk import FoldedValues, backward_folded, forward_folded
from lrpfn.engine.folding import Folding
from lrpfn.layers import Layer

HERE = Path(__file__).resolve().parent
MODELS = (
    "vgg16",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
)
ATTENTION_MODELS = ("vit_b_16",)  # explained with composites.attnlrp() in the epsilon rows
QUICK_MODELS = ("resnet18",)
BATCHES = (1, 4, 8)
TARGETS = 4  # k of the several-targets rows
MULTI = f"lrpfn epsilon, {TARGETS} targets"
FLOOR = f"lrpfn forward + {TARGETS} x walk"
BASELINES = ("forward", "gradient", "lrpfn forward", "lrpfn epsilon walk")  # no relevance sum
DEFAULT_METHODS = (
    "forward",
    "gradient",
    "lrpfn epsilon",
    "lrpfn epsilon_gamma_box",
    "lrpfn epsilon_alpha2_beta1",
    "lrpfn epsilon, one-shot",
    MULTI,
    "lrpfn forward",
    "lrpfn epsilon walk",
)
MEMORY_METHODS = (
    "gradient",
    "lrpfn epsilon",
    "lrpfn epsilon_gamma_box",
    "lrpfn epsilon_alpha2_beta1",
)
GOALS = (  # (method, reference, goal on the time ratio, batch sizes it applies to)
    ("lrpfn epsilon", "gradient", 1.10, None),
    ("lrpfn epsilon_gamma_box", "gradient", 1.6, None),
    ("lrpfn epsilon_alpha2_beta1", "gradient", 2.3, None),
    ("lrpfn epsilon, one-shot", "lrpfn epsilon", 1.1, None),
    (MULTI, FLOOR, 1.1, None),
)
MEMORY_GOAL = 1.2  # peak memory of an lrpfn call over the gradient's


@dataclass(frozen=True)
class Setting:
    """What one benchmark row runs on; rebuilt identically in each memory subprocess."""

    model: str
    batch: int
    size: int
    device: str
    threads: int
    seed: int = 0


@dataclass(frozen=True)
class Case:
    """A built model with its input and targets; `stack` holds zennit's registrations."""

    setting: Setting
    model: torch.nn.Module
    x: torch.Tensor
    targets: torch.Tensor  # (batch, TARGETS): the top classes, best first
    stack: ExitStack


def build(setting: Setting, stack: ExitStack) -> Case:
    """The seeded model (eval mode), input and top-10 targets."""
    configure_threads(setting.threads)
    torch.manual_seed(setting.seed)
    model = getattr(torchvision.models, setting.model)(weights=None).eval().to(setting.device)
    if setting.model in ATTENTION_MODELS:  # torchvision's zero head: all logits 0, no relevance
        torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(setting.batch, 3, setting.size, setting.size, device=setting.device)
    with torch.no_grad():
        output = model(x)
    return Case(setting, model, x, output.topk(TARGETS, dim=1).indices, stack)


def _epsilon() -> object:
    return rules.Epsilon(1e-6)


def _gamma_box() -> object:
    return composites.epsilon_gamma_box(low=-3.0, high=3.0)


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose parameters do not require gradients (the user's model is not touched)."""
    return copy.deepcopy(model).requires_grad_(False)


def _seed(model: torch.nn.Module, case: Case) -> torch.Tensor:
    """One-hot of each sample's first target, shaped like the output."""
    with torch.no_grad():
        return torch.zeros_like(model(case.x)).scatter_(1, case.targets[:, :1], 1.0)


def _forward(case: Case):
    def run():
        with torch.no_grad():
            case.model(case.x)

    return run


def _gradient(case: Case):
    frozen = _frozen_copy(case.model)
    seed = _seed(frozen, case)

    def run():
        leaf = case.x.detach().requires_grad_()
        (gradient,) = torch.autograd.grad(frozen(leaf), leaf, seed)
        return gradient

    return run


def _for_model(rule_mapping: Callable[[], object], case: Case) -> object:
    """The rule mapping; AttnLRP for the transformers, whose epsilon rows it is."""
    if case.setting.model not in ATTENTION_MODELS:
        return rule_mapping()
    if rule_mapping is not _epsilon:
        raise ValueError("not applicable: a CNN composite (the epsilon rows use AttnLRP)")
    return composites.attnlrp()


def _lrpfn(rule_mapping: Callable[[], object], targets_per_sample: int = 1, folded=True):
    def make(case: Case):
        plan = lrpfn.prepare(case.model, _for_model(rule_mapping, case))
        if not folded:
            plan = dataclasses.replace(plan, folding=Folding())
        targets = case.targets
        target = targets[:, 0] if targets_per_sample == 1 else targets[:, :targets_per_sample]
        return lambda: lrpfn.lrp(plan, case.x, target=target)

    return make


def _one_shot(rule_mapping: Callable[[], object]):
    """`lrpfn.lrp(model, x, rules)`: capture, prepare and explain in every call."""

    def make(case: Case):
        mapping, target = _for_model(rule_mapping, case), case.targets[:, 0]
        return lambda: lrpfn.lrp(case.model, case.x, mapping, target=target)

    return make


def _lrpfn_forward(case: Case):
    """lrpfn's (folded) forward pass alone (the values the walk keeps), on a prepared plan."""
    plan = lrpfn.prepare(case.model, _for_model(_epsilon, case))

    def run():
        with torch.no_grad():
            return forward_folded(plan, case.x)

    return run


def _lrpfn_walk(case: Case):
    """One target's (folded) backward walk alone, on forward values kept once (each call
    walks a copy of them, so every call starts from the same values)."""
    plan = lrpfn.prepare(case.model, _for_model(_epsilon, case))
    with torch.no_grad():
        env, output_node = forward_folded(plan, case.x)
        output = env[output_node]
        start = torch.zeros_like(output).scatter_(1, case.targets[:, :1], 1.0) * output

    def run():
        copy = FoldedValues(env)
        copy.terms = dict(env.terms)
        with torch.no_grad():
            return backward_folded(plan, copy, output_node, start)

    return run


def kept_values(case: Case) -> str:
    """MiB and count of the tensors lrpfn's epsilon forward keeps for the walk (values and
    folded factors, max-pool indices) against those autograd saves for the input gradient,
    parameters and tensors derived from them (modified weights) not counted."""
    plan = lrpfn.prepare(case.model, _for_model(_epsilon, case))
    parameters = {p.untyped_storage().data_ptr() for p in case.model.parameters()}
    parameters |= {b.untyped_storage().data_ptr() for b in case.model.buffers()}
    frozen = _frozen_copy(case.model)
    parameters |= {p.untyped_storage().data_ptr() for p in frozen.parameters()}
    with torch.no_grad():
        env, _ = forward_folded(plan, case.x)
    data = [value for node, value in env.items() if node.op not in ("get_attr", "placeholder")]
    for record in env.terms.values():  # see engine.folded_walk: layers' terms (weight, t)
        if isinstance(record, tuple) and isinstance(record[0], Layer):
            data += [t for _, t in record[1]]
        elif isinstance(record, tuple):  # a sum's factor, a max-pool's indices
            data += [item for item in record if isinstance(item, torch.Tensor)]
    saved: list[torch.Tensor] = []
    leaf = case.x.detach().requires_grad_()

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = frozen(leaf)
    del output
    ours, theirs = _unique_mib(data, parameters), _unique_mib(saved, parameters | {leaf.data_ptr()})
    return (
        f"- {case.setting.model}, batch {case.setting.batch}: lrpfn epsilon keeps "
        f"{ours[0]:.1f} MiB in {ours[1]} tensors, autograd saves {theirs[0]:.1f} MiB in "
        f"{theirs[1]} tensors ({ours[0] / theirs[0]:.2f}x)"
    )


def _unique_mib(tensors: list, exclude: set) -> tuple[float, int]:
    storages = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.numel() > 1:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in exclude:
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20, len(storages)


def _canonizers(case: Case) -> list:
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    return [ResNetCanonizer()] if case.setting.model.startswith("resnet") else [VGGCanonizer()]


def _zennit_epsilon(case: Case):
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Linear

    layer_map = [*layer_map_base(1e-6), (Linear, Epsilon(1e-6))]
    return LayerMapComposite(layer_map, canonizers=_canonizers(case))


def _zennit_gamma_box(case: Case):
    from zennit.composites import EpsilonGammaBox

    low, high = torch.full_like(case.x, -3.0), torch.full_like(case.x, 3.0)
    return EpsilonGammaBox(low=low, high=high, canonizers=_canonizers(case))


def _zennit_alpha_beta(case: Case):
    from zennit.composites import EpsilonAlpha2Beta1

    return EpsilonAlpha2Beta1(canonizers=_canonizers(case))


def _zennit(composite: Callable[[Case], object]):
    """zennit's Gradient attributor on a frozen copy, its composite registered once."""

    def make(case: Case):
        from zennit.attribution import Gradient

        frozen = _frozen_copy(case.model)
        attributor = case.stack.enter_context(Gradient(model=frozen, composite=composite(case)))
        seed = _seed(frozen, case)
        return lambda: attributor(case.x, lambda output: seed * output)[1]

    return make


def _captum(case: Case):
    from captum.attr import LRP

    explainer = LRP(_frozen_copy(case.model))
    target = case.targets[:, 0]
    return lambda: explainer.attribute(case.x.detach().requires_grad_(), target=target)


METHODS: dict[str, Callable[[Case], Callable[[], object]]] = {
    "forward": _forward,
    "gradient": _gradient,
    "lrpfn epsilon": _lrpfn(_epsilon),
    "lrpfn epsilon, plain walk": _lrpfn(_epsilon, folded=False),
    "zennit epsilon": _zennit(_zennit_epsilon),
    "lrpfn epsilon_gamma_box": _lrpfn(_gamma_box),
    "lrpfn epsilon_gamma_box, plain walk": _lrpfn(_gamma_box, folded=False),
    "zennit epsilon_gamma_box": _zennit(_zennit_gamma_box),
    "lrpfn epsilon_alpha2_beta1": _lrpfn(composites.epsilon_alpha2_beta1),
    "lrpfn epsilon_alpha2_beta1, plain walk": _lrpfn(composites.epsilon_alpha2_beta1, folded=False),
    "zennit epsilon_alpha2_beta1": _zennit(_zennit_alpha_beta),
    "captum LRP": _captum,
    "lrpfn epsilon, one-shot": _one_shot(_epsilon),
    MULTI: _lrpfn(_epsilon, TARGETS),
    f"lrpfn epsilon_gamma_box, {TARGETS} targets": _lrpfn(_gamma_box, TARGETS),
    "lrpfn forward": _lrpfn_forward,
    "lrpfn epsilon walk": _lrpfn_walk,
}


def make_method(setting: Setting, name: str) -> Callable[[], object]:
    """Build the model and the method `name` on it: the setup of a memory subprocess.

    zennit's registration stays open until the subprocess ends.
    """
    return METHODS[name](build(setting, ExitStack()))


def relevance_ratio(relevance: object, case: Case) -> str:
    """Mean over samples (and targets) of the summed relevance over the explained logit."""
    if not isinstance(relevance, torch.Tensor) or relevance.ndim < case.x.ndim:
        return ""
    with torch.no_grad():
        output = case.model(case.x)
    k = 1 if relevance.ndim == case.x.ndim else relevance.shape[0]
    logits = output.gather(1, case.targets[:, :k]).T  # (k, batch)
    sums = relevance.detach().reshape(logits.shape[0], logits.shape[1], -1).sum(-1)
    return f"{(sums / logits).mean().item():.4g}"


def bench_model(
    setting: Setting,
    repeats: int,
    memory: bool,
    names: list[str],
    warm: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[dict], dict, str]:
    """The table rows of one model at one batch size, lrpfn's prepare seconds and its kept
    forward values (`warm`: peak memory of a second call, see `common.peak_memory_mib`)."""
    methods, rows = {}, {}
    with ExitStack() as stack:
        case = build(setting, stack)
        for name in names:
            factory = METHODS[name]
            rows[name] = {"model": setting.model, "batch": setting.batch, "method": name}
            rows[name]["note"] = ""
            try:
                method = factory(case)
                result = method()  # the warm-up call
                if name not in BASELINES:
                    rows[name]["ratio"] = relevance_ratio(result, case)
                methods[name] = method
            except Exception as error:  # a library that cannot explain the model: record why
                rows[name]["note"] = _first_line(error)
        medians = interleaved_medians(methods, repeats, 0, setting.device, clock)
        prepared = prepare_seconds(case.model)
        kept = kept_values(case)
    if "lrpfn forward" in medians and "lrpfn epsilon walk" in medians:
        medians[FLOOR] = medians["lrpfn forward"] + TARGETS * medians["lrpfn epsilon walk"]
        rows[FLOOR] = {"model": setting.model, "batch": setting.batch, "method": FLOOR}
        rows[FLOOR]["note"] = "sum of the two rows above, not a call"
    for name, seconds in medians.items():
        rows[name]["seconds"] = seconds
        rows[name]["x gradient"] = seconds / medians["gradient"]
    for name in [name for name in MEMORY_METHODS if name in methods] if memory else ():
        try:
            rows[name]["MiB"] = peak_memory_mib(
                make_method, setting, name, device=setting.device, warm=warm
            )
        except Exception as error:
            rows[name]["note"] += f" memory: {_first_line(error)}"
    return list(rows.values()), prepared, kept


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:160]}"


def prepare_seconds(model: torch.nn.Module) -> dict[str, float]:
    """lrpfn's one-off cost per rule mapping (capture, canonicalize, check, resolve)."""
    result = {}
    for name, mapping in (
        ("epsilon", rules.Epsilon(1e-6)),
        ("epsilon_gamma_box", composites.epsilon_gamma_box(low=-3.0, high=3.0)),
    ):
        start = time.perf_counter()
        lrpfn.prepare(model, mapping)
        result[name] = time.perf_counter() - start
    return result


def table(rows: list[dict], device: str) -> str:
    card = device_name(device)
    gradient_mib = {
        (row["model"], row["batch"]): row["MiB"]
        for row in rows
        if row["method"] == "gradient" and row.get("MiB")
    }

    def number(row, key, digits):
        return f"{row[key]:.{digits}f}" if key in row else "-"

    def memory_ratio(row):
        reference = gradient_mib.get((row["model"], row["batch"]))
        return f"{row['MiB'] / reference:.2f}" if reference and row.get("MiB") else "-"

    cells = [
        [
            row["model"],
            row["batch"],
            row["method"],
            card,
            number(row, "seconds", 3),
            number(row, "x gradient", 2),
            number(row, "MiB", 0),
            memory_ratio(row),
            row.get("ratio", ""),
            row["note"].strip(),
        ]
        for row in rows
    ]
    header = ["model", "batch", "method", "device", "median s", "× gradient", "peak MiB"]
    header += ["memory × gradient", "ΣR / logit", "note"]
    return markdown_table(header, cells)


def goals(rows: list[dict]) -> str:
    """One line per goal and (model, batch): the measured ratio and whether it is met."""
    lines = []
    for model, batch in dict.fromkeys((row["model"], row["batch"]) for row in rows):
        found = {r["method"]: r for r in rows if (r["model"], r["batch"]) == (model, batch)}
        where = f"{model}, batch {batch}"
        for method, reference, goal, batches in GOALS:
            if batches is not None and batch not in batches:
                continue
            if "seconds" in found.get(method, {}) and "seconds" in found.get(reference, {}):
                ratio = found[method]["seconds"] / found[reference]["seconds"]
                lines.append(_goal_line(where, f"{method} / {reference}", ratio, goal))
        gradient = found.get("gradient", {}).get("MiB")
        for method in MEMORY_METHODS[1:]:
            if gradient and found.get(method, {}).get("MiB"):
                ratio = found[method]["MiB"] / gradient
                lines.append(
                    _goal_line(where, f"peak memory {method} / gradient", ratio, MEMORY_GOAL)
                )
        for rule in ("epsilon", "epsilon_gamma_box", "epsilon_alpha2_beta1"):
            ours, theirs = found.get(f"lrpfn {rule}", {}), found.get(f"zennit {rule}", {})
            if "seconds" in ours and "seconds" in theirs:
                ratio = ours["seconds"] / theirs["seconds"]
                lines.append(f"- {where}: lrpfn / zennit {rule}: time {ratio:.2f}")
    return "\n".join(lines)


def _goal_line(where: str, what: str, ratio: float, goal: float) -> str:
    verdict = "met" if ratio <= goal else "NOT met"
    return f"- {where}: {what} = {ratio:.2f} (goal ≤ {goal}: {verdict})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models and inputs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 3, quick 2)")
    parser.add_argument("--models", nargs="+", help="torchvision model names")
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default 1 8)")
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        help="measure peak memory in subprocesses (default: on, off with --quick)",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), metavar="METHOD",
        help="a subset of the methods (the gradient is always included: ratios need it)",
    )  # fmt: skip
    parser.add_argument(
        "--warm-memory", action="store_true",
        help="peak memory of a second call (one-time loads of a process not counted)",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time CPU seconds of this process (time.process_time) instead of wall-clock "
        "time: for a loaded, shared machine, with --threads 1",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--output", type=Path, help="default benchmarks/RESULTS[_cuda].md")
    args = parser.parse_args(argv)
    batches, size = ((2,), 64) if args.quick else (tuple(args.batches or BATCHES), 224)
    repeats = args.repeats or (2 if args.quick else 3)
    memory = (not args.quick) if args.memory is None else args.memory
    models = args.models or (QUICK_MODELS if args.quick else MODELS)
    configure_threads(args.threads)
    # the load and the code before this run: other jobs and commits may come during it
    machine = f"{machine_description(args.device, args.threads)}; lrpfn commit {revision()}"

    names = list(dict.fromkeys(["gradient", *(args.methods or DEFAULT_METHODS)]))
    command = shlex.join(["python", "benchmarks/bench_lrp.py", *(argv or sys.argv[1:])])
    output = None
    if not args.no_write:
        output = args.output or HERE / ("RESULTS.md" if args.device == "cpu" else "RESULTS_cuda.md")
    # every model at the first batch size first: a run stopped early has all models
    settings = [(name, batch) for batch in batches for name in models]
    rows, prepared, kept = [], {}, []
    for done, (name, batch) in enumerate(settings, 1):
        setting = Setting(name, batch, size, args.device, args.threads)
        print(f"{name}: batch {batch} x 3 x {size} x {size} ...", file=sys.stderr, flush=True)
        clock = time.process_time if args.cpu_time else time.perf_counter
        model_rows, seconds, kept_line = bench_model(
            setting, repeats, memory, names, args.warm_memory, clock
        )
        rows += model_rows
        kept.append(kept_line)
        prepared[name] = f"- {name}: " + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items())
        header = (
            f"Machine: {machine}.  \nDate: {today()}.  \nCommand: `{command}`.  \n"
            f"Clock: {'CPU seconds of the process' if args.cpu_time else 'wall-clock'}.  \n"
            f"Input: batch {' and '.join(map(str, batches))} x 3 x {size} x {size}, random "
            f"weights (seed 0), median of {repeats} interleaved repetitions after one "
            "warm-up round."
        )
        if done < len(settings):  # a long run leaves its rows so far behind it
            header += f"  \n**Partial: {done} of {len(settings)} (model, batch) settings done.**"
        report = "\n\n".join(
            [
                "# lrpfn benchmark",
                header,
                _METHOD_NOTE
                + ("" if memory else " (not measured in this run)")
                + (_WARM_NOTE if memory and args.warm_memory else ""),
                table(rows, args.device),
                "Goals and comparisons:\n\n" + goals(rows),
                "lrpfn's one-off `prepare` (not in the timings above):\n\n"
                + "\n".join(prepared.values()),
                "Kept forward values (the forward's values the walk reads, with the folded "
                "layers' factors and max-pool indices, against autograd's saved tensors of "
                "the input gradient; parameters not counted):\n\n" + "\n".join(kept),
            ]
        )
        if output is not None:
            output.write_text(report + "\n")
    print(report)
    if output is not None:
        print(f"\nwritten to {output}", file=sys.stderr)


_WARM_NOTE = (
    ". This run measured memory on a second call (`--warm-memory`): the method is called "
    "once before the peak RSS is reset, so what a process loads once (code, and the "
    "modules the first `torch.func.vjp` imports) is not counted"
)
_METHOD_NOTE = (
    "Times are seconds per call for the whole batch; × gradient is the time over the "
    "input gradient's of the same (model, batch) in the same run (forward + backward on a "
    "copy with frozen parameters). lrpfn runs on a Plan prepared once, except the "
    "one-shot row (`lrpfn.lrp(model, x, rules)`: capture, prepare and explain). The "
    f"{TARGETS}-targets row is compared with its floor: lrpfn's forward pass plus "
    f"{TARGETS} times one target's backward walk, both timed in the same run. "
    "ΣR / logit: input relevance summed per sample over the explained logit, batch mean. "
    "Peak MiB: in a fresh subprocess per (model, batch, method), after building the model "
    "and preparing the method, the peak RSS (VmHWM) is reset (/proc/self/clear_refs) and "
    "one call is made; the value is the peak RSS after the call minus the RSS before it, "
    "so it counts the call's activations and temporaries, not the model or the prepared "
    "copies (on CUDA: torch.cuda.max_memory_allocated over the allocation before the call)"
)


if __name__ == "__main__":
    main()
