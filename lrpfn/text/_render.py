"""Token heatmaps: HTML and terminal renderers of a `TokenRelevance`.

Each token is coloured by its score relative to the sample's largest absolute score:
red for positive relevance (evidence for the explained logit), blue for negative,
white for none (the usual LRP colour map, as in `lrpfn.image`).
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["to_html", "to_terminal"]


def _tokens(ids: list[int], tokenizer: Any) -> list[str]:
    """Readable token strings: a tokenizer's tokens with its word-start markers shown as
    spaces, the ids themselves without a tokenizer."""
    if tokenizer is None:
        return [f"[{index}]" for index in ids]
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        if hasattr(tokenizer, "convert_tokens_to_string"):
            return [tokenizer.convert_tokens_to_string([token]) for token in tokens]
        return list(tokens)
    return [str(tokenizer(index)) for index in ids]


def _colour(score: float, scale: float) -> tuple[int, int, int]:
    """White to red for positive, white to blue for negative scores."""
    strength = 0.0 if scale == 0 else max(-1.0, min(1.0, score / scale))
    fade = round(255 * (1 - abs(strength)))
    return (255, fade, fade) if strength >= 0 else (fade, fade, 255)


def _sample(explanation: Any, tokenizer: Any, sample: int) -> tuple[list[str], list[float]]:
    ids = explanation.input_ids[sample].tolist()
    scores = explanation.scores[sample].double().tolist()
    return _tokens(ids, tokenizer), scores


def to_html(explanation: Any, tokenizer: Any = None, sample: int = 0) -> str:
    """An HTML fragment with each token of `sample` on a background of its relevance.

    Arguments:
        explanation: a `lrpfn.text.TokenRelevance`.
        tokenizer: a Hugging Face tokenizer (or anything with `convert_ids_to_tokens`, or
            a function from id to string); None shows the ids.
        sample: the sample of the batch.

    Returns:
        A `<div>` of `<span>` elements; each span's `title` holds its score.
    """
    tokens, scores = _sample(explanation, tokenizer, sample)
    scale = max((abs(score) for score in scores), default=0.0)
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        red, green, blue = _colour(score, scale)
        spans.append(
            f'<span style="background-color: rgb({red}, {green}, {blue}); '
            f'white-space: pre-wrap" title="{score:.4g}">{html.escape(token)}</span>'
        )
    return '<div class="lrpfn-tokens" style="font-family: monospace">' + "".join(spans) + "</div>"


def to_terminal(explanation: Any, tokenizer: Any = None, sample: int = 0) -> str:
    """The tokens of `sample` with 24-bit ANSI background colours (black text).

    Arguments as in `to_html`.
    """
    tokens, scores = _sample(explanation, tokenizer, sample)
    scale = max((abs(score) for score in scores), default=0.0)
    coloured = []
    for token, score in zip(tokens, scores, strict=True):
        red, green, blue = _colour(score, scale)
        coloured.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    return "".join(coloured)
