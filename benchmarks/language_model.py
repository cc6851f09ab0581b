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

    def run():
        for step in range(count):
            leaf = embeddings.detach().requires_grad_(True)
            logits = model(inputs_embeds=leaf, logits_to_keep=count, use_cache=False).logits
            (gradient,) = torch.autograd.grad(logits[0, step, tokens[0, step]], leaf)
            (leaf * gradient).sum(-1)

    return run


def _walks_floor(prepared, ids: torch.Tensor, new: torch.Tensor):
    """lrpfn's floor for generation: one engine forward, then k walks each from one logit."""
    from lrpfn.engine import TRACE_LOCK, backward, forward

    sequence = torch.cat([ids, new], 1)[:, :-1]
    embeddings = prepared.embed(sequence)
    constants = prepared.inputs(sequence, None, embeddings.dtype)
    plan = prepared.plan(embeddings, constants, None, last=new.shape[1], select=new[..., None])

    def run():
        with torch.no_grad(), TRACE_LOCK.running():
            env, output_node = forward(plan, embeddings)
            output = env[output_node]
            for step in range(new.shape[1]):
                start = torch.zeros_like(output)
                start[:, step] = output[:, step]
                backward(plan, env, output_node, start, False)[0].sum(-1)

    return run


def setup(task: str, method: str, size: str, length: int, new: int, device: str):
    """The call to measure (module level: `common.peak_memory_mib` pickles it)."""
    from lrpfn import text

    model = _model(size, device)
    ids = _ids(1, length, device, seed=1)
    generated = _ids(1, new, device, seed=2)
    if method == "gradient":
        last = generated[:, -1:] if task == "generation" else _ids(1, 1, device, seed=3)
        source = torch.cat([ids, generated], 1)[:, :-1] if task == "generation" else ids
        return _gradients(model, source, last)
    if method == "k gradients":
        return _gradients(model, torch.cat([ids, generated], 1)[:, :-1], generated)
    prepared = text.prepare(model, check=not method.endswith("check=False"))
    if method == "forward + k walks":
        call = _walks_floor(prepared, ids, generated)
    elif method.startswith("explain_generation"):
        call = lambda: text.explain_generation(prepared, ids, generated_ids=generated)  # noqa: E731
    else:  # "explain (prepared)", "explain (prepared), check=False"
        call = lambda: text.explain(prepared, ids)  # noqa: E731
    call()  # the capture, made once and held
    return call


GENERATION = (
    "gradient",
    "k gradients",
    "forward + k walks",
    "explain_generation",
    "explain_generation, check=False",
)
EXPLAIN = ("gradient", "explain (prepared)", "explain (prepared), check=False")
MEMORY = ("gradient", "explain_generation", "explain (prepared)")  # peak memory measured


def table(
    task: str, methods: tuple[str, ...], size: str, length: int, new: int, device: str,
    repeats: int, memory: bool,
) -> list[list[Any]]:  # fmt: skip
    """Rows of seconds and peak MiB per method, with ratios to the first method."""
    calls = {method: setup(task, method, size, length, new, device) for method in methods}
    times = common.interleaved_medians(calls, repeats=repeats, warmup=1, device=device)
    del calls
    peaks = {
        method: common.peak_memory_mib(
            setup, task, method, size, length, new, device, device=device, warm=True
        )
        for method in (methods if memory else ())
        if method in MEMORY
    }
    return [
        [size, length, *common.ratio_cells(method, times, peaks, methods[0])] for method in methods
    ]


def first_call_seconds(size: str, length: int, device: str) -> float:
    """`text.explain` on an unprepared model: the capture included."""
    import time

    from lrpfn import text

    model, ids = _model(size, device), _ids(1, length, device, seed=1)
    start = time.perf_counter()
    text.explain(model, ids)
    common.synchronize(device)
    return time.perf_counter() - start


HEADER = ["model", "tokens", "method", "seconds", "x first", "peak MiB", "x first"]


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
