"""Speed and peak memory of AttnLRP on transformers, against the input gradient and lxt.

Rows: torchvision's `vit_b_16` (batch 8, 224 x 224, random weights) and a Llama-style
decoder (hidden 512, 8 layers, 8 heads, 512 tokens; `tests/attention_models.Decoder`).
Methods: the input gradient (forward + backward + product with the input), lrpfn's
`composites.attnlrp()` on a prepared plan, and for the decoder lxt 2.1's efficient
AttnLRP (the same module with lxt's rules in its forward: input x modified gradient).
lxt patches torchvision's ViT process-wide, so it is not timed on `vit_b_16` here.

Times are medians of interleaved repetitions (`common.interleaved_medians`); ratios are to
the input gradient measured in the same run. Peak memory is measured in a fresh process per
method (`common.peak_memory_mib`), on a second call after one warm-up call (`warm=True`):
the first call of a process loads code once (lrpfn's first `torch.func.vjp` imports some 900
modules, about 150 MiB of resident memory) that is not memory of the explanation.

    python benchmarks/bench_transformers.py            # the rows above
    python benchmarks/bench_transformers.py --quick    # small sizes, a few seconds
    python benchmarks/bench_transformers.py --models "llama-style decoder" --repeats 7
    python benchmarks/bench_transformers.py --device cuda
    python benchmarks/bench_transformers.py --language-model [--large]   # Hugging Face
        # Llama: generation explained, explain on a prepared model (benchmarks/language_model.py)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import common
import language_model

import lrpfn
from lrpfn import composites

FULL = {"vit_batch": 8, "decoder": {"width": 512, "heads": 8, "layers": 8, "length": 512}}
QUICK = {"vit_batch": 1, "decoder": {"width": 64, "heads": 4, "layers": 2, "length": 64}}


def _vit(batch: int, device: str):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval().to(device)
    torch.nn.init.normal_(model.heads.head.weight, std=0.01)  # torchvision starts it at zero
    return model, torch.randn(batch, 3, 224, 224, device=device)


def _decoder(size: dict, device: str, lxt: str | None = None):
    from attention_models import Decoder

    model = Decoder(
        width=size["width"], heads=size["heads"], kv_heads=size["heads"], layers=size["layers"],
        vocab=1000, length=size["length"], lxt=lxt,
    )  # fmt: skip
    model = model.float().eval().to(device)
    torch.manual_seed(1)
    return model, torch.randn(1, size["length"], size["width"], device=device)


def _gradient(model, x, target):
    def run():
        leaf = x.detach().requires_grad_(True)
        output = model(leaf)
        output.gather(1, target[:, None]).sum().backward()
        return leaf * leaf.grad

    return run


def _lrpfn(model, x, target):
    plan = lrpfn.prepare(model, composites.attnlrp())
    return lambda: lrpfn.lrp(plan, x, target=target)


def setup(row: str, method: str, config: dict, device: str):
    """The call to measure (a module-level function: `peak_memory_mib` pickles it)."""
    if row == "vit_b_16":
        model, x = _vit(config["vit_batch"], device)
    else:
        model, x = _decoder(config["decoder"], device, "attnlrp" if method == "lxt" else None)
    with torch.no_grad():
        target = model(x).argmax(-1)
    if method == "lrpfn attnlrp":
        return _lrpfn(model, x, target)
    return _gradient(model, x, target)  # "gradient", and lxt's modified gradient


ROWS = {
    "vit_b_16": ("gradient", "lrpfn attnlrp"),
    "llama-style decoder": ("gradient", "lrpfn attnlrp", "lxt"),
}


def measure(
    config: dict, device: str, repeats: int, memory: bool, models: tuple[str, ...] = tuple(ROWS)
) -> list[list[Any]]:
    rows = []
    for row, methods in ((row, ROWS[row]) for row in models):
        calls = {method: setup(row, method, config, device) for method in methods}
        times = common.interleaved_medians(calls, repeats=repeats, warmup=1, device=device)
        peaks = (
            {
                m: common.peak_memory_mib(setup, row, m, config, device, device=device, warm=True)
                for m in methods
            }
            if memory
            else {}
        )
        rows.extend([row, *common.ratio_cells(method, times, peaks)] for method in methods)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--models", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument(
        "--language-model", action="store_true", help="the Hugging Face Llama tables instead"
    )
    parser.add_argument("--large", action="store_true", help="with --language-model: 1.1B too")
    args = parser.parse_args(argv)
    common.configure_threads(args.threads)
    if args.language_model:
        print(common.machine_description(args.device, args.threads))
        print(f"revision {common.revision()}, {common.today()}\n", flush=True)
        memory = not args.no_memory
        language_model.run(args.device, args.repeats, memory, args.quick, args.large)
        return
    config = QUICK if args.quick else FULL
    rows = measure(config, args.device, args.repeats, not args.no_memory, tuple(args.models))
    print(common.machine_description(args.device, args.threads))
    print(f"revision {common.revision()}, {common.today()}; sizes {config}\n")
    header = ["model", "method", "seconds", "x gradient", "peak MiB", "x gradient"]
    print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
