"""Explain a language model's next-token prediction with AttnLRP: relevance per token.

    python examples/explain_text.py --model PATH --text "The capital of France is"
    python examples/explain_text.py --smoke     # a tiny random Llama, no checkpoint needed

`--model` is a local Hugging Face checkpoint folder (a causal LM and its tokenizer, e.g.
one saved with `model.save_pretrained(PATH)` and `tokenizer.save_pretrained(PATH)`);
nothing is downloaded. Prints the tokens coloured by relevance (red: evidence for the
predicted token, blue: against) and writes `out/explanation.html`. In smoke mode the
model has random weights and a made-up vocabulary, so the heatmap means nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lrpfn import composites, text


class _Vocabulary:
    """A stand-in tokenizer for the smoke run: words by index."""

    words = tuple(
        [
            "the",
            "a",
            "capital",
            "of",
            "france",
            "is",
            "paris",
            "city",
            "river",
            "big",
            "small",
            "and",
            "in",
            "on",
        ]
    )

    def __call__(self, sentence: str) -> torch.Tensor:
        known = {word: index for index, word in enumerate(self.words)}
        return torch.tensor([[known.get(word, 0) for word in sentence.lower().split()]])

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [f" {self.words[index % len(self.words)]}" for index in ids]


def smoke_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(_Vocabulary.words), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), _Vocabulary()


def checkpoint(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Hugging Face causal LM checkpoint folder")
    parser.add_argument("--text", default="The capital of France is")
    parser.add_argument("--rules", choices=("attnlrp", "cp_lrp"), default="attnlrp")
    parser.add_argument("--out", default="out/explanation.html")
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
    explanation = text.explain(model, input_ids, rules=composites.PRESETS[args.rules]())
    predicted = tokenizer.convert_ids_to_tokens([int(explanation.target[0])])[0]
    print(f"next token {predicted!r}, logit {explanation.logit[0]:.4f}, "
          f"relevance sum {explanation.scores[0].sum():.4f} ({args.rules})")  # fmt: skip
    print(explanation.to_terminal(tokenizer))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"<!doctype html><meta charset='utf-8'>{explanation.to_html(tokenizer)}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
