"""Renderers of a `GenerationRelevance`: a self-contained HTML page and a terminal view.

The HTML page holds the tokens and the matrix as JSON and a few lines of JavaScript:
selecting a generated token (click, or Tab and Enter; `page.html#step=3` opens at the
fourth) shades every token before it by its relevance for that token, scaled by the row's largest absolute value (red positive,
blue negative, as `lrpfn.text.to_html`). No server, no external file, no network.
Padding tokens are left out of both views.
"""

from __future__ import annotations

import html
import json
from typing import Any

from ._render import _colour, _tokens

__all__ = ["generation_html", "generation_terminal"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 60em; }
#lrpfn-tokens { font-family: monospace; line-height: 2; }
#lrpfn-tokens span { white-space: pre-wrap; padding: 0.1em 0; }
#lrpfn-tokens span.generated { text-decoration: underline dotted; cursor: pointer; }
#lrpfn-tokens span.selected { outline: 2px solid black; }
"""

_SCRIPT = """
const spans = Array.from(document.querySelectorAll("#lrpfn-tokens span"));
function colour(score, scale) {
  const strength = scale === 0 ? 0 : Math.max(-1, Math.min(1, score / scale));
  const fade = Math.round(255 * (1 - Math.abs(strength)));
  return strength >= 0 ? `rgb(255, ${fade}, ${fade})` : `rgb(${fade}, ${fade}, 255)`;
}
function select(step) {
  const row = DATA.matrix[step];
  const scale = Math.max(0, ...row.map(Math.abs));
  spans.forEach((span) => {
    const position = Number(span.dataset.position);
    span.classList.toggle("selected", position === DATA.prompt + step);
    span.style.backgroundColor = position < DATA.prompt + step ?
      colour(row[position], scale) : "white";
    if (position < DATA.prompt + step) span.title = row[position].toPrecision(4);
  });
  document.getElementById("lrpfn-caption").textContent =
    `Generated token ${step + 1} of ${DATA.matrix.length}: ` +
    `${JSON.stringify(DATA.tokens[DATA.prompt + step])}, explained logit ` +
    `${DATA.logits[step].toPrecision(4)}, relevance sum ` +
    `${row.reduce((a, b) => a + b, 0).toPrecision(4)}`;
}
spans.filter((span) => span.classList.contains("generated")).forEach((span) => {
  const step = Number(span.dataset.position) - DATA.prompt;
  span.addEventListener("click", () => select(step));
  span.addEventListener("keydown", (event) => { if (event.key === "Enter") select(step); });
});
const asked = Number((location.hash.match(/step=(\\d+)/) || [0, 0])[1]);
select(Math.min(asked, DATA.matrix.length - 1));
"""


def generation_html(explanation: Any, tokenizer: Any = None, sample: int = 0) -> str:
    """A self-contained HTML page of `sample`'s generation (see the module docstring).

    Arguments:
        explanation: a `lrpfn.text.GenerationRelevance`.
        tokenizer: a Hugging Face tokenizer (or anything with `convert_ids_to_tokens`, or
            a function from id to string); None shows the ids.
        sample: the sample of the batch.

    Returns:
        An HTML document (save it as a `.html` file and open it in a browser).
    """
    tokens = _tokens(explanation.sequences[sample].tolist(), tokenizer)
    kept = explanation.attention_mask[sample].bool().tolist()
    prompt = explanation.prompt_length
    spans = []
    for position, (token, keep) in enumerate(zip(tokens, kept, strict=True)):
        if not keep:
            continue
        generated = position >= prompt
        attributes = ' class="generated" tabindex="0"' if generated else ""
        spans.append(f'<span data-position="{position}"{attributes}>{html.escape(token)}</span>')
    data = {
        "tokens": tokens,
        "prompt": prompt,
        "matrix": explanation.matrix[sample].double().tolist(),
        "logits": explanation.logits[sample].double().tolist(),
    }
    payload = json.dumps(data).replace("</", "<\\/")  # no "</script>" inside the script
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>lrpfn: relevance of each generated token</title>\n"
        f"<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<p>Select a generated token (underlined) to shade the tokens before it by their "
        "relevance for it: red for, blue against.</p>\n"
        f'<div id="lrpfn-tokens">{"".join(spans)}</div>\n'
        '<p id="lrpfn-caption"></p>\n'
        f"<script>\nconst DATA = {payload};\n{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def generation_terminal(
    explanation: Any, tokenizer: Any = None, sample: int = 0, step: int | None = None
) -> str:
    """One line per generated token: the tokens before it on 24-bit ANSI backgrounds of
    their relevance for it, then the token itself in brackets and its explained logit.

    Arguments as in `generation_html`; `step` shows that generated token only.
    """
    tokens = _tokens(explanation.sequences[sample].tolist(), tokenizer)
    kept = explanation.attention_mask[sample].bool().tolist()
    prompt = explanation.prompt_length
    steps = range(explanation.matrix.shape[1]) if step is None else [step]
    lines = []
    for index in steps:
        row = explanation.matrix[sample, index].double().tolist()
        scale = max((abs(score) for score in row), default=0.0)
        coloured = []
        for position in range(prompt + index):
            if kept[position]:
                red, green, blue = _colour(row[position], scale)
                coloured.append(
                    f"\x1b[48;2;{red};{green};{blue}m\x1b[38;2;0;0;0m{tokens[position]}\x1b[0m"
                )
        logit = float(explanation.logits[sample, index])
        lines.append("".join(coloured) + f" -> [{tokens[prompt + index]}] ({logit:.4g})")
    return "\n".join(lines)
