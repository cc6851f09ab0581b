"""The issue-21 row at a real size: a 1.1B-parameter Llama config (random weights), 128 tokens.

    python benchmarks/llama_1b.py times        # gradient vs explain on a prepared model
    python benchmarks/llama_1b.py gradient     # one call in this process: time, peak RSS
    python benchmarks/llama_1b.py explain      # one first `text.explain` (capture included)

Times: medians of 3 interleaved calls after one warm-up, in one process (2 threads).
Memory: the process's peak RSS (VmHWM) after one call, in a fresh process per method,
beside its RSS with the model built (about 10 minutes and 6 GiB in all on 2 CPU cores).
"""

from __future__ import annotations

import sys
import time

import language_model as lm
import torch

from lrpfn import text


def _rss_gib(field: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1]) / 2**20


def _gradient(model, ids) -> None:
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, logits_to_keep=1).logits[:, -1]
    torch.autograd.grad(logits.max(-1).values.sum(), embeddings)


def main(what: str) -> None:
    torch.set_num_threads(2)
    model, ids = lm._model("llama 1.1B", "cpu"), lm._ids(1, 128, "cpu", seed=1)
    if what in ("explain", "times"):
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    if what == "times":
        checked, unchecked = text.prepare(model, ids), text.prepare(model, ids, check=False)
        calls = {
            "gradient": lambda: _gradient(model, ids),
            "explain (prepared)": lambda: text.explain(checked, ids),
            "explain (prepared), check=False": lambda: text.explain(unchecked, ids),
        }
        for call in calls.values():
            call()
        seconds = {name: [] for name in calls}
        for _ in range(3):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - start)
        first = sorted(seconds["gradient"])[1]
        for name, values in seconds.items():
            median = sorted(values)[1]
            print(f"| llama 1.1B | 128 | {name} | {median:.2f} | {median / first:.2f} |")
        return
    before = _rss_gib("VmRSS")
    start = time.perf_counter()
    _gradient(model, ids) if what == "gradient" else text.explain(model, ids)
    seconds = time.perf_counter() - start
    print(
        f"{what}: {seconds:.1f} s, peak RSS {_rss_gib('VmHWM'):.2f} GiB "
        f"(with the model built, before the call: {before:.2f} GiB)"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "times")
