"""Run in a subprocess by the tests: lrpfn and lxt 2.1 on tiny Hugging Face models.

lxt patches transformers' and torch's classes process-wide (and refuses to patch a class
twice), so one interpreter runs one rule variant over models of different modeling
modules. lrpfn explains first, with nothing patched; then lxt patches and explains the
same model at the same token embeddings. Prints one JSON line per model: the largest
absolute difference relative to the largest relevance.

    python tests/hf_lxt_oracle.py llama:attnlrp gpt2:cp_lrp llama:cp_lrp:eager

Families (`text_families.py`) with lxt patches: llama, qwen2, qwen3, gemma3, gpt2; a third
field `eager` runs the model with eager attention.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import text_families

# the transformers modeling module each family's lxt patches are written for
_MODULES = {
    "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3", "gpt2": "gpt2",
}  # fmt: skip


def _model_and_ids(name: str, implementation: str):
    model = text_families.build(name)
    model.config._attn_implementation = implementation
    generator = torch.Generator().manual_seed(0)
    return model, torch.randint(2, text_families.VOCAB, (2, 7), generator=generator)


def lrpfn_relevance(name: str, variant: str, implementation: str):
    """lrpfn's relevance and explained targets (run before lxt patches anything)."""
    import lrpfn.text
    from lrpfn import composites

    model, input_ids = _model_and_ids(name, implementation)
    preset = {"attnlrp": composites.attnlrp, "cp_lrp": composites.cp_lrp}[variant]
    explanation = lrpfn.text.explain(model, input_ids, rules=preset(epsilon=1e-12))
    return explanation.relevance, explanation.target


def lxt_relevance(name: str, variant: str, implementation: str, target):
    """input x modified gradient with lxt's patches for the family."""
    from lxt.efficient import monkey_patch

    maps = importlib.import_module(f"lxt.efficient.models.{_MODULES[name]}")
    modeling = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    monkey_patch(modeling, maps.attnLRP if variant == "attnlrp" else maps.cp_LRP)
    model, input_ids = _model_and_ids(name, implementation)
    embeddings = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
    logits.gather(1, target[:, None]).sum().backward()
    return (embeddings * embeddings.grad).detach()


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    specs = [[*spec.split(":"), "sdpa"][:3] for spec in sys.argv[1:]]
    explained = [lrpfn_relevance(*spec) for spec in specs]  # all before lxt patches
    for (name, variant, implementation), (relevance, target) in zip(specs, explained, strict=True):
        expected = lxt_relevance(name, variant, implementation, target)
        error = ((relevance - expected).abs().max() / expected.abs().max()).item()
        row = {"model": name, "variant": variant, "attention": implementation}
        print(json.dumps({**row, "relative_error": error}))
