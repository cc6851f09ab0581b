"""Agreement with lxt 2.1 and conservation of AttnLRP and CP-LRP on transformers (float64).

Agreement: the largest absolute difference between lrpfn's and lxt's relevance at the
input embeddings, relative to the largest relevance, with lrpfn's presets at
`epsilon=1e-12` (lxt's linear layers are epsilon-free):

- the Llama-style decoder and the BERT-style encoder of `tests/attention_models.py`,
  5 random seeds each (the oracle is the same module with lxt's rules in its forward);
- tiny Hugging Face Llama and GPT-2 models (`tests/hf_lxt_oracle.py`, one subprocess per
  model and variant, since lxt patches transformers process-wide).

Conservation: $|\\sum R - \\text{logit}| / |\\text{logit}|$, largest over 5 seeds, for
CP-LRP with $\\epsilon = 0$ on the bias-free Llama-style decoder (exact up to rounding)
and, for comparison, AttnLRP (whose softmax rule is not conservative) and the BERT-style
encoder (biases absorb relevance).

    python benchmarks/agreement_transformers.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import lrpfn  # noqa: E402
from lrpfn import composites  # noqa: E402

PRESETS = {"attnlrp": composites.attnlrp, "cp_lrp": composites.cp_lrp}
SEEDS = range(5)


def _lxt_relevance(model, x, target):
    x = x.clone().requires_grad_(True)
    model(x).gather(1, target[:, None]).sum().backward()
    return (x * x.grad).detach()


def own_modules() -> list[tuple[str, str, float, float]]:
    from attention_models import DTYPE, Decoder, Encoder

    rows = []
    for kind in (Decoder, Encoder):
        for variant, preset in PRESETS.items():
            errors, gaps = [], []
            for seed in SEEDS:
                plain = kind(seed=seed).eval()
                oracle = kind(lxt=variant, seed=seed).eval()
                oracle.load_state_dict(plain.state_dict())
                x = torch.randn(
                    3, 6, 16, dtype=DTYPE, generator=torch.Generator().manual_seed(seed)
                )
                target = plain(x).argmax(-1)
                expected = _lxt_relevance(oracle, x, target)
                got = lrpfn.lrp(plain, x, preset(epsilon=1e-12), target=target)
                errors.append(((got - expected).abs().max() / expected.abs().max()).item())
                exact = lrpfn.lrp(plain, x, preset(epsilon=0.0), target=target).sum((1, 2))
                logit = plain(x).gather(1, target[:, None])[:, 0].detach()
                gaps.append(((exact - logit).abs() / logit.abs()).max().item())
            rows.append((kind.__name__, variant, max(errors), max(gaps)))
    return rows


def hugging_face() -> list[tuple[str, str, float]]:
    rows = []
    for model in ("llama", "gpt2"):
        for variant in PRESETS:
            result = subprocess.run(
                [sys.executable, str(ROOT / "tests" / "hf_lxt_oracle.py"), f"{model}:{variant}"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append((model, variant, row["relative_error"]))
    return rows


def main() -> None:
    print(
        "| model | variant | max relative difference to lxt | max abs(ΣR - logit) / abs(logit), epsilon 0 |"
    )
    print("|---|---|---|---|")
    for name, variant, error, gap in own_modules():
        print(f"| {name} (tests/attention_models.py) | {variant} | {error:.1e} | {gap:.1e} |")
    for name, variant, error in hugging_face():
        print(f"| Hugging Face {name} (tiny, random) | {variant} | {error:.1e} | - |")


if __name__ == "__main__":
    main()
