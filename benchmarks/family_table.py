"""The family table of docs/transformers.md: every language-model family `lrpfn.text` covers.

For each family, a tiny random-weight model from its transformers config class
(`tests/text_families.py`; hidden 16, 2 layers, windows of 3 tokens on 8-token inputs),
two samples, the second padded (left for decoders, right for encoders, classifiers and
the encoder side of encoder-decoders):

- runs: `text.explain` with AttnLRP and CP-LRP in float64 and float32 (4 of 4);
- logit check: the largest |explained - own| / (1 + |own|) over those runs, where own is
  the model's plain forward on the ids (`text.explain` raises above 1e-6 in float64,
  1e-3 in float32);
- conservation: max |sum of scores - logit| / |logit| for CP-LRP (epsilon 0, float64) on a
  bias-free copy (biases and absolute position embeddings zeroed);
- lxt: the largest relative difference to lxt 2.1 over AttnLRP and CP-LRP (float64,
  epsilon 1e-12, `tests/hf_lxt_oracle.py` in one subprocess per variant), where lxt has
  patches for the family; "-" elsewhere.

    python benchmarks/family_table.py           # print the table
    python benchmarks/family_table.py --write   # and put it into docs/transformers.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import text_families as families  # noqa: E402

from lrpfn import composites, text  # noqa: E402

DOCS = ROOT / "docs" / "transformers.md"
START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"
LXT_PATCHED = ("llama", "qwen2", "qwen3", "gemma3", "gpt2")
LENGTH = 8


class Case:
    """One row: how to build the model, its inputs and the explained position."""

    def __init__(self, name: str, build: Callable, kind: str):
        self.name, self.build, self.kind = name, build, kind

    def inputs(self):
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(2, families.VOCAB, (2, LENGTH), generator=generator)
        mask = torch.ones_like(input_ids)
        padded = slice(0, 2) if self.kind == "decoder" else slice(LENGTH - 2, LENGTH)
        mask[1, padded] = 0
        input_ids[1, padded] = 1
        extra = {}
        if self.kind == "seq2seq":
            extra["decoder_input_ids"] = torch.randint(
                2, families.VOCAB, (2, 4), generator=generator
            )
        position = {"decoder": -1, "encoder": 3, "seq2seq": -1, "classifier": None}[self.kind]
        return input_ids, mask, position, extra

    def own(self, model, input_ids, mask, position, extra):
        arguments = {"input_ids": input_ids, "attention_mask": mask, **extra}
        if self.kind == "decoder":
            arguments["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(**arguments).logits
        return logits if position is None else logits[:, position]


def _cases() -> list[Case]:
    cases = [Case(name, build, "decoder") for name, build in families.DECODERS.items()]
    cases += [Case(name, build, "decoder") for name, build in families.MIXTURES.items()]
    cases += [Case(name, build, "encoder") for name, build in families.ENCODERS.items()]
    cases += [Case(name, build, "seq2seq") for name, build in families.SEQ2SEQ.items()]
    cases += [
        Case(f"{name} classifier", (lambda n=name: families.classifier(n)), "classifier")
        for name in ("llama", "qwen2", "gpt2", "bert")
    ]
    return cases


def _model(case: Case, dtype: torch.dtype):
    torch.manual_seed(0)
    return case.build().to(dtype).eval()


def measure(case: Case) -> dict:
    input_ids, mask, position, extra = case.inputs()
    runs, worst_logit = 0, 0.0
    for dtype in (torch.float64, torch.float32):
        for preset in (composites.attnlrp, composites.cp_lrp):
            model = _model(case, dtype)
            try:
                explanation = text.explain(
                    model, input_ids, mask, position=position, rules=preset(), **extra
                )
            except Exception as error:  # the table reports what failed
                print(f"{case.name} {dtype} {preset.__name__}: {error!r}"[:300], file=sys.stderr)
                continue
            runs += 1
            own = case.own(model, input_ids, mask, explanation.position, extra)
            own = own.gather(1, explanation.target[:, None])[:, 0].double()
            gap = (explanation.logit.double() - own).abs() / (1 + own.abs())
            worst_logit = max(worst_logit, gap.max().item())
    model = families.bias_free(_model(case, torch.float64))
    explanation = text.explain(
        model, input_ids, mask, position=position, rules=composites.cp_lrp(epsilon=0.0), **extra
    )
    total = explanation.scores.sum(1)
    if explanation.decoder_scores is not None:
        total = total + explanation.decoder_scores.sum(1)
    conservation = ((total - explanation.logit).abs() / explanation.logit.abs()).max().item()
    return {"runs": runs, "logit": worst_logit, "conservation": conservation}


def lxt_agreement() -> dict[str, float]:
    worst: dict[str, float] = {}
    for variant in ("attnlrp", "cp_lrp"):
        specs = [f"{name}:{variant}" for name in LXT_PATCHED]
        result = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "hf_lxt_oracle.py"), *specs],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for line in result.stdout.strip().splitlines():
            row = json.loads(line)
            worst[row["model"]] = max(worst.get(row["model"], 0.0), row["relative_error"])
    return worst


def table() -> str:
    lxt = lxt_agreement()
    lines = [
        "| family | runs (AttnLRP, CP-LRP x float64, float32) | logit check, max rel. gap "
        "| CP-LRP conservation (bias-free) | lxt 2.1 agreement |",
        "|---|---|---|---|---|",
    ]
    for case in _cases():
        row = measure(case)
        agreement = f"{lxt[case.name]:.1e}" if case.name in lxt else "-"
        lines.append(
            f"| {case.name} | {row['runs']}/4 | {row['logit']:.1e} "
            f"| {row['conservation']:.1e} | {agreement} |"
        )
    return "\n".join(lines)


def write(rendered: str) -> None:
    docs = DOCS.read_text()
    begin, end = docs.index(START) + len(START), docs.index(END)
    DOCS.write_text(f"{docs[:begin]}\n{rendered}\n{docs[end:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/transformers.md")
    arguments = parser.parse_args()
    warnings.simplefilter("ignore")
    rendered = table()
    print(rendered)
    if arguments.write:
        write(rendered)


if __name__ == "__main__":
    main()
