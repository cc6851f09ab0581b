"""Run in a subprocess by `test_text.py`: lrpfn and lxt 2.1 on tiny Hugging Face models.

lxt patches transformers' and torch's classes process-wide (and refuses to patch a class
twice), so one interpreter checks each model once, with one variant. lrpfn explains
first, with nothing patched; then lxt patches and explains the same model at the same
token embeddings. Prints one JSON line per model: the largest absolute difference
relative to the largest relevance.

    python tests/hf_lxt_oracle.py llama:attnlrp gpt2:cp_lrp
"""

from __future__ import annotations

import json
import sys
import warnings

import torch


def _model(name: str):
    if name == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
        )  # fmt: skip
        return LlamaForCausalLM(config)
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16)
    return GPT2LMHeadModel(config)


def check(name: str, variant: str) -> float:
    torch.manual_seed(0)
    import lrpfn.text
    from lrpfn import composites

    model = _model(name).double().eval()
    input_ids = torch.randint(0, 40, (2, 7))
    preset = {"attnlrp": composites.attnlrp, "cp_lrp": composites.cp_lrp}[variant]
    explanation = lrpfn.text.explain(model, input_ids, rules=preset(epsilon=1e-12))

    from lxt.efficient import monkey_patch
    from lxt.efficient.models import gpt2, llama

    module, maps = {"llama": (llama.modeling_llama, llama), "gpt2": (gpt2.modeling_gpt2, gpt2)}[
        name
    ]
    monkey_patch(module, maps.attnLRP if variant == "attnlrp" else maps.cp_LRP)
    embeddings = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, use_cache=False).logits[:, -1]
    logits.gather(1, explanation.target[:, None]).sum().backward()
    expected = (embeddings * embeddings.grad).detach()
    return ((explanation.relevance - expected).abs().max() / expected.abs().max()).item()


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    for pair in sys.argv[1:]:
        name, variant = pair.split(":")
        print(
            json.dumps({"model": name, "variant": variant, "relative_error": check(name, variant)})
        )
