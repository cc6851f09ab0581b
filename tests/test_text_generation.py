"""`lrpfn.text.explain_generation`: every generated token explained in one call.

The reference for row j of the matrix is an independent call: `text.explain` on the
sequence up to generated token j (its own capture at that length), with the generated
token as the target. Tiny random-weight Llama (float64).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import InvalidInputError, InvalidTargetError
from lrpfn.text._render import _colour

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families  # noqa: E402

VOCAB = families.VOCAB
PROMPT = 5
NEW = 4


@pytest.fixture(scope="module")
def generation():
    model = families.seeded_llama()
    prepared = text.prepare(model, rules=composites.cp_lrp(epsilon=0.0))
    input_ids = torch.randint(0, VOCAB, (2, PROMPT), generator=torch.Generator().manual_seed(0))
    return model, prepared, text.explain_generation(prepared, input_ids, max_new_tokens=NEW)


def test_the_tokens_are_the_models_greedy_continuation(generation):
    model, _, explained = generation
    prompt = explained.sequences[:, :PROMPT]
    with torch.no_grad():
        expected = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW,
            min_new_tokens=NEW, do_sample=False, pad_token_id=0,
        )  # fmt: skip
        logits = model(explained.sequences).logits[:, PROMPT - 1 : -1]
    assert torch.equal(explained.sequences, expected)
    assert torch.equal(explained.generated_ids, logits.argmax(-1))
    chosen = logits.gather(-1, explained.generated_ids[..., None])[..., 0]
    torch.testing.assert_close(explained.logits, chosen, rtol=1e-12, atol=1e-12)


def test_each_row_is_the_explanation_of_its_token(generation):
    """Row j equals `explain` of the sequence up to token j (another capture, another
    forward), and tokens from j's own position on have no relevance (causality)."""
    _, prepared, explained = generation
    assert explained.matrix.shape == (2, NEW, PROMPT + NEW)
    for step in range(NEW):
        length = PROMPT + step
        single = text.explain(
            prepared, explained.sequences[:, :length], target=explained.generated_ids[:, step]
        )
        torch.testing.assert_close(
            explained.matrix[:, step, :length], single.scores, rtol=1e-10, atol=1e-13
        )
        torch.testing.assert_close(explained.logits[:, step], single.logit)
        assert torch.all(explained.matrix[:, step, length:] == 0)


def test_rows_sum_to_their_logits_under_cp_lrp(generation):
    """CP-LRP on a bias-free Llama conserves: each row sums to its explained logit."""
    _, _, explained = generation
    torch.testing.assert_close(explained.matrix.sum(-1), explained.logits, rtol=1e-9, atol=1e-12)


def test_one_capture_explains_every_token_and_is_held(monkeypatch):
    count = [0]
    export = torch.export.export

    def counted(*args, **kwargs):
        count[0] += 1
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counted)
    prepared = text.prepare(families.seeded_llama(2))
    input_ids = torch.randint(0, VOCAB, (1, PROMPT))
    first = text.explain_generation(prepared, input_ids, max_new_tokens=NEW)
    assert count[0] == 1
    again = text.explain_generation(prepared, input_ids, generated_ids=first.generated_ids)
    assert count[0] == 1
    torch.testing.assert_close(again.matrix, first.matrix, rtol=0, atol=0)


def test_left_padding_matches_the_unpadded_prompt():
    """A left-padded prompt in a batch is explained as the same prompt alone (positions
    counted from its first token, as generate() counts them); padding gets nothing."""
    model = families.seeded_llama(3)
    prepared = text.prepare(model, rules=composites.cp_lrp(epsilon=0.0))
    short = torch.randint(0, VOCAB, (1, PROMPT - 2))
    other = torch.randint(0, VOCAB, (1, PROMPT))
    padded = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1), other])
    mask = torch.ones_like(padded)
    mask[0, :2] = 0
    batch = text.explain_generation(prepared, padded, max_new_tokens=3, attention_mask=mask)
    alone = text.explain_generation(prepared, short, max_new_tokens=3)
    assert torch.equal(batch.generated_ids[0], alone.generated_ids[0])
    torch.testing.assert_close(batch.matrix[0, :, 2:], alone.matrix[0], rtol=1e-9, atol=1e-12)
    assert torch.all(batch.matrix[0, :, :2] == 0)


def test_contrast_rows_are_differences(generation):
    """With contrast c the start is z_a e_a - z_c e_c: row j is the relevance for token
    a_j minus that for c_j at the same position (rules are linear in the start),
    computed here by two `explain` calls on the prefix."""
    _, prepared, explained = generation
    input_ids = explained.sequences[:, :PROMPT]
    contrast = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14]])
    contrasted = text.explain_generation(
        prepared, input_ids, generated_ids=explained.generated_ids, contrast=contrast
    )
    for step in range(NEW):
        prefix = contrasted.sequences[:, : PROMPT + step]
        token = text.explain(prepared, prefix, target=contrasted.generated_ids[:, step])
        other = text.explain(prepared, prefix, target=contrast[:, step])
        torch.testing.assert_close(
            contrasted.matrix[:, step, : PROMPT + step], token.scores - other.scores
        )
        torch.testing.assert_close(contrasted.logits[:, step], token.logit - other.logit)
    torch.testing.assert_close(contrasted.matrix.sum(-1), contrasted.logits, rtol=1e-9, atol=1e-12)
    with pytest.raises(InvalidTargetError, match="contrast"):
        text.explain_generation(prepared, input_ids, generated_ids=contrast, contrast=VOCAB)


@pytest.mark.filterwarnings("ignore:`encoder_attention_mask` is deprecated:FutureWarning")
def test_bad_arguments_are_named():
    prepared = text.prepare(families.seeded_llama())
    input_ids = torch.randint(0, VOCAB, (1, PROMPT))
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        text.explain_generation(prepared, input_ids)
    with pytest.raises(InvalidInputError, match="generated_ids"):
        text.explain_generation(prepared, input_ids, generated_ids=torch.zeros(2, 3).long())
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    bert = transformers.BertForMaskedLM(config).eval()
    with pytest.raises(InvalidInputError, match="causal"):
        text.explain_generation(bert, input_ids, max_new_tokens=2)


def _payload(page: str) -> dict:
    return json.loads(re.search(r"const DATA = (.*);\n", page).group(1))


def test_the_html_page_holds_the_matrix_and_the_tokens(generation):
    _, _, explained = generation
    page = explained.to_html(tokenizer=lambda index: f"t{index}", sample=1)
    assert page.startswith("<!DOCTYPE html>") and "http" not in page  # self-contained
    data = _payload(page)
    assert data["prompt"] == PROMPT
    assert data["tokens"] == [f"t{index}" for index in explained.sequences[1].tolist()]
    torch.testing.assert_close(
        torch.tensor(data["matrix"], dtype=torch.float64), explained.matrix[1]
    )
    assert page.count('class="generated"') == NEW


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless chromium")
def test_selecting_a_token_in_a_browser_shades_its_sources(generation, tmp_path):
    """The page's script, run by headless chromium at `#step=2`, colours each earlier
    token as the Python renderer's colour map does for row 2."""
    _, _, explained = generation
    path = tmp_path / "generation.html"
    path.write_text(explained.to_html())
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         f"file://{path}#step=2"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    row = explained.matrix[0, 2].tolist()
    scale = max(abs(score) for score in row)
    found = dict(
        re.findall(r'data-position="(\d+)"[^>]*background-color: (rgb\([^)]*\)|white)', dom)
    )
    for position in range(PROMPT + 2):
        assert found[str(position)] == "rgb({}, {}, {})".format(*_colour(row[position], scale))
    assert found[str(PROMPT + 2)] == "white"
    assert re.search(rf'data-position="{PROMPT + 2}" class="generated selected"', dom)


def test_the_terminal_view_has_a_line_per_token(generation):
    _, _, explained = generation
    lines = explained.to_terminal(tokenizer=lambda index: f"t{index}").splitlines()
    assert len(lines) == NEW
    for step, line in enumerate(lines):
        assert line.endswith(f"-> [t{explained.generated_ids[0, step].item()}] "
                             f"({explained.logits[0, step].item():.4g})")  # fmt: skip
        assert line.count("\x1b[48;2;") == PROMPT + step
