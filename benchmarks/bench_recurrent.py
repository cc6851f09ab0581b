"""Speed and peak memory of LRP on an LSTM and a Mamba against the input gradient.

The model: a 2-layer `nn.LSTM` (64 input features, hidden 256, batch_first) and a linear
head on the last step, random weights, batch 8. Methods: the input gradient (forward +
backward + product with the input; PyTorch runs the LSTM as one fused op each way) and
lrpfn's `lstm_lrp()` on a plan prepared once (the LSTM unrolled into per-step ops). The
main row has 128 steps; the length table repeats it at 64, 256 and 1024 steps, where the
time should grow linearly with the length.

The Mamba row: a Hugging Face `MambaForCausalLM` (hidden 128, 2 layers, state 16, random
weights, its sequential pure-torch path) on 512 tokens, batch 1, explained at its token
embeddings (the last position's top logit) with `composites.mamba_lrp()`, against the
input gradient at the embeddings. (transformers is a benchmark extra, not a dependency.)

Times are medians of interleaved repetitions (`common.interleaved_medians`); ratios are to
the input gradient measured in the same run. Peak memory is measured in a fresh process per
method (`common.peak_memory_mib`, on a second call after a warm-up call).

    python benchmarks/bench_recurrent.py                 # 128 steps, then 64 / 256 / 1024
    python benchmarks/bench_recurrent.py --quick         # small sizes, seconds
    python benchmarks/bench_recurrent.py --device cuda
    python benchmarks/bench_recurrent.py --no-mamba      # the LSTM rows only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import lrpfn
from lrpfn import composites

FULL = {"features": 64, "hidden": 256, "layers": 2, "batch": 8, "steps": 128}
QUICK = {"features": 8, "hidden": 16, "layers": 2, "batch": 2, "steps": 16}
MAMBA = {"full": {"hidden": 128, "layers": 2, "state": 16, "tokens": 512},
         "quick": {"hidden": 16, "layers": 1, "state": 4, "tokens": 16}}  # fmt: skip
LENGTHS = {"full": (64, 256, 1024), "quick": (8, 32)}


class Classifier(nn.Module):
    def __init__(self, features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _model(config: dict, steps: int, device: str):
    torch.manual_seed(0)
    model = Classifier(config["features"], config["hidden"], config["layers"]).eval().to(device)
    x = torch.randn(config["batch"], steps, config["features"], device=device)
    return model, x


class _LastLogits(nn.Module):
    """`embeddings -> logits[:, -1]` of a Hugging Face causal LM."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]


def _mamba(config: dict, device: str):
    import warnings

    import transformers

    torch.manual_seed(0)
    mamba_config = transformers.MambaConfig(
        vocab_size=1000, hidden_size=config["hidden"], state_size=config["state"],
        num_hidden_layers=config["layers"], expand=2,
    )  # fmt: skip
    with warnings.catch_warnings():  # "the fast path is not available": the torch path
        warnings.simplefilter("ignore")
        model = transformers.MambaForCausalLM(mamba_config).eval().to(device)
    ids = torch.randint(0, 1000, (1, config["tokens"]), device=device)
    with torch.no_grad():
        embeddings = model.get_input_embeddings()(ids)
    return _LastLogits(model), embeddings


def setup(method: str, config: dict, steps: int, device: str):
    """The call to measure (a module-level function: `peak_memory_mib` pickles it)."""
    mamba = "tokens" in config
    model, x = _mamba(config, device) if mamba else _model(config, steps, device)
    with torch.no_grad():
        target = model(x).argmax(-1)
    if method.startswith("lrpfn"):
        rules = composites.mamba_lrp() if mamba else composites.lstm_lrp()
        plan = lrpfn.prepare(model, rules, example_input=x)
        return lambda: lrpfn.lrp(plan, x, target=target)

    def gradient():
        leaf = x.detach().requires_grad_(True)
        output = model(leaf)
        output.gather(1, target[:, None]).sum().backward()
        return leaf * leaf.grad

    return gradient


def measure(
    config: dict, steps: int, device: str, repeats: int, memory: bool, mamba: bool = False
) -> list[list[Any]]:
    methods = ("gradient", "lrpfn mamba_lrp" if mamba else "lrpfn lstm_lrp")
    calls = {method: setup(method, config, steps, device) for method in methods}
    times = common.interleaved_medians(calls, repeats=repeats, warmup=1, device=device)
    peaks = {}
    if memory:
        peaks = {
            method: common.peak_memory_mib(setup, method, config, steps, device, device=device,
                                           warm=True)
            for method in methods
        }  # fmt: skip
    return [[steps, *common.ratio_cells(method, times, peaks)] for method in methods]


def prepare_seconds(config: dict, steps: int, device: str) -> float:
    """Seconds of `lrpfn.prepare` (capture, canonicalize, unroll, check): paid once per length."""
    model, x = _model(config, steps, device)
    start = time.perf_counter()
    lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--no-mamba", action="store_true", help="skip the Mamba row")
    args = parser.parse_args(argv)
    common.configure_threads(args.threads)
    config = QUICK if args.quick else FULL
    header = ["steps", "method", "seconds", "x gradient", "peak MiB", "x gradient"]
    main_rows = measure(config, config["steps"], args.device, args.repeats, not args.no_memory)
    length_rows, prepared = [], []
    for steps in LENGTHS["quick" if args.quick else "full"]:
        length_rows += measure(config, steps, args.device, args.repeats, not args.no_memory)
        prepared.append([steps, f"{prepare_seconds(config, steps, args.device):.2f}"])
    print(common.machine_description(args.device, args.threads))
    print(f"revision {common.revision()}, {common.today()}; sizes {config}\n")
    print(common.markdown_table(header, main_rows))
    print("\nBy sequence length:\n")
    print(common.markdown_table(header, length_rows))
    print("\nlrpfn.prepare (once per length):\n")
    print(common.markdown_table(["steps", "seconds"], prepared))
    if not args.no_mamba:
        size = MAMBA["quick" if args.quick else "full"]
        rows = measure(size, size["tokens"], args.device, args.repeats, not args.no_memory, True)
        print(f"\nMamba {size}:\n")
        print(common.markdown_table(["tokens", *header[1:]], rows))


if __name__ == "__main__":
    main()
