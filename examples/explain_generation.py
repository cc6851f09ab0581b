"""Explain every token a language model generates: which earlier tokens each one used.

    python examples/explain_generation.py --model PATH --text "The capital of France is"
    python examples/explain_generation.py --smoke     # a tiny random Llama, no checkpoint

`--model` is a local Hugging Face checkpoint folder (a causal LM and its tokenizer);
nothing is downloaded. The model generates `--max-new-tokens` tokens greedily, and
`lrpfn.text.explain_generation` explains all of them in one call (one capture, one
forward over the generated sequence, one walk per token). Prints one line per generated
token with its sources coloured (red: evidence for it, blue: against), and writes
`out/generation.html` (open it and click a generated token to shade its sources) and
`out/generation.png` (the matrix: generated tokens down, every token across, each row
scaled to its largest absolute value). In smoke mode the model has random weights and
a made-up vocabulary, so the relevance means nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from explain_text import checkpoint, smoke_model  # the same tiny model and checkpoint loading

from lrpfn import composites, text


def heatmap(explanation: text.GenerationRelevance, tokenizer, path: Path) -> None:
    """The matrix of sample 0 as an image: generated tokens down, all tokens across."""
    import matplotlib.pyplot as plt

    tokens = [
        token.replace("\u0120", " ").replace("\u2581", " ")
        for token in tokenizer.convert_ids_to_tokens(explanation.sequences[0].tolist())
    ]
    matrix = explanation.matrix[0].double()
    scale = matrix.abs().amax(-1, keepdim=True).clamp(min=1e-30)
    new = matrix.shape[0]
    width, height = 1.5 + 0.35 * len(tokens), 1.2 + 0.35 * new
    figure, axes = plt.subplots(figsize=(width, height))
    axes.imshow((matrix / scale).numpy(), cmap="bwr", vmin=-1, vmax=1, aspect="auto")
    axes.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    axes.set_yticks(range(new), tokens[explanation.prompt_length :], fontsize=8)
    axes.set_xlabel("every token (prompt, then generated)")
    axes.set_ylabel("generated token")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Hugging Face causal LM checkpoint folder")
    parser.add_argument("--text", default="The capital of France is")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--rules", choices=("attnlrp", "cp_lrp"), default="attnlrp")
    parser.add_argument("--out", default="out/generation.html")
    parser.add_argument("--figure", default="out/generation.png")
    parser.add_argument("--smoke", action="store_true", help="a tiny random Llama")
    args = parser.parse_args(argv)
    if args.smoke:
        model, tokenizer = smoke_model()
        input_ids = tokenizer(args.text)
    elif args.model:
        model, tokenizer = checkpoint(args.model)
        input_ids = tokenizer(args.text, return_tensors="pt").input_ids
    else:
        parser.error("pass --model PATH (a local checkpoint) or --smoke")
    prepared = text.prepare(model, rules=composites.PRESETS[args.rules]())
    explanation = text.explain_generation(prepared, input_ids, max_new_tokens=args.max_new_tokens)
    sums = explanation.matrix[0].sum(-1)
    print(f"{explanation.matrix.shape[1]} generated tokens explained ({args.rules}); "
          f"logits {explanation.logits[0].tolist()}, row sums {sums.tolist()}")  # fmt: skip
    print(explanation.to_terminal(tokenizer))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(explanation.to_html(tokenizer))
    heatmap(explanation, tokenizer, Path(args.figure))
    print(f"wrote {out} and {args.figure}")


if __name__ == "__main__":
    main()
