"""Explanations of language models: relevance per token.

    from lrpfn import text
    explanation = text.explain(model, input_ids)              # AttnLRP, the next token
    print(explanation.to_terminal(tokenizer))                 # coloured tokens
    html = explanation.to_html(tokenizer)                     # a heatmap to save or show

    prepared = text.prepare(model)                            # holds the captures
    generation = text.explain_generation(prepared, input_ids, max_new_tokens=16)
    generation.matrix                                         # (batch, new tokens, tokens)

`explain` takes a Hugging Face causal or masked language model or sequence classifier
(`transformers` is an optional extra, `pip install lrpfn[text]`) and explains one logit
at the token embeddings (`inputs_embeds`); the model is never modified or patched.
`prepare` holds the captures (one per input shape), so repeated calls capture nothing.
"""

from ._explain import TokenRelevance as TokenRelevance, explain as explain
from ._generation import (
    GenerationRelevance as GenerationRelevance,
    explain_generation as explain_generation,
)
from ._inside import (
    ConceptNodes as ConceptNodes,
    InsideRelevance as InsideRelevance,
    concept_nodes as concept_nodes,
    explain_inside as explain_inside,
)
from ._prepared import PreparedLanguageModel as PreparedLanguageModel, prepare as prepare
from ._render import to_html as to_html, to_terminal as to_terminal
