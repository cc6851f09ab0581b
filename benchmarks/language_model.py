"""The Hugging Face language-model rows of `bench_transformers.py` (`--language-model`).

A Llama-style `transformers.LlamaForCausalLM` with random weights (hidden 512, 8 layers,
8 heads, MLP 1376, vocabulary 32000, float32, sdpa attention), and TinyLlama's 1.1B
configuration for one row at a real size (hidden 2048, 22 layers, 32 heads, 4 key-value
heads, MLP 5632). Three tables:

1. generation: a 256-token prompt and 32 generated tokens (random ids, given as
   `generated_ids`: generating is not explaining). `text.explain_generation` on a
   prepared model against its floor in lrpfn (one engine forward over the sequence and
   32 single-token walks, each from one logit), against 32 input gradients of the same
   logits (each a forward with the LM head on the 32 positions and a backward), and one
   input gradient (the memory reference);
2. explain: `text.explain` on a prepared model (no capture) against the input gradient of
   the same logit (a forward with the LM head on the last position and a backward), at
   64, 256 and 1024 tokens;
3. the same at 1.1B parameters and 128 tokens (`--large`; minutes, about 10 GiB), with
   the first call's time (capture included) too.

Every `text` call includes its logit check (one plain forward of the model), except
those marked `check=False` (`text.prepare(model, check=False)`: the first call at a
capture is checked, later ones check only that the logits are finite). Peak memory is
measured for the gradient, `explain_generation` and `explain (prepared)` (a fresh process
each, second call).
"""

from __future__ import annotations

from typing import Any

import common
import torch

SIZES = {
    "llama-style 512x8": dict(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=8,
    ),
    "llama-style tiny": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4,
    ),
    "llama 1.1B": dict(
        hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
        num_key_value_heads=4,
    ),
}  # fmt: skip
VOCAB = 32000


def _model(size: str, device: str):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        **SIZES[size], vocab_size=VOCAB, max_position_embeddings=2048,
        attn_implementation="sdpa",
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).float().eval().to(device)


def _ids(batch: int, length: int, device: str, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator).to(device)


def _gradients(model, ids: torch.Tensor, tokens: torch.Tensor):
    """One input gradient per column of `tokens` `(1, k)`: the logit of token j at the
    j-th of the last k positions, each a forward (LM head on k positions) and a backward
    to the input only (`torch.autograd.grad`: no parameter gradients)."""
    count = tokens.shape[1]
    with torch.no_grad():
        embeddings = model.get_input_embeddings()(ids)

    def run(device: str, repeats: int, memory: bool, quick: bool, large: bool) -> None:
    """Print the tables as Markdown, each as soon as it is measured."""
    size = "llama-style tiny" if quick else "llama-style 512x8"
    prompt, new, lengths = (32, 4, (16, 32)) if quick else (256, 32, (64, 256, 1024))
    print(f"### Generation: {new} generated tokens after a {prompt}-token prompt\n")
    rows = table("generation", GENERATION, size, prompt, new, device, repeats, memory)
    print(common.markdown_table(HEADER, rows), flush=True)
    print("\n### Explaining one logit on a prepared model\n")
    for length in lengths:
        rows = table("explain", EXPLAIN, size, length, 0, device, repeats, memory)
        print(common.markdown_table(HEADER, rows), flush=True)
    if large:
        del rows
        print("\n### 1.1B parameters, 128 tokens\n")
        rows = table("explain", EXPLAIN[:2], "llama 1.1B", 128, 0, device, 1, memory)
        print(common.markdown_table(HEADER, rows))
        seconds = first_call_seconds("llama 1.1B", 128, device)
        print(f"\nFirst `text.explain` call (capture included): {seconds:.1f} s", flush=True)
