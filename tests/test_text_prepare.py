"""`lrpfn.text.prepare`: captures held per shape, so that repeated explanations capture
nothing; contrastive targets (the logit of a minus that of b).

A capture is counted by wrapping `torch.export.export`, the one call that makes one
(fx cannot trace transformers' models). Tiny random-weight Llama (float64).
"""

from __future__ import annotations

import pytest
import torch

from lrpfn import composites, text
from lrpfn.errors import InvalidInputError, InvalidRuleError, InvalidTargetError

transformers = pytest.importorskip("transformers", reason="transformers is the [text] extra")

import text_families as families  # noqa: E402

VOCAB = families.VOCAB


@pytest.fixture
def exports(monkeypatch):
    """The number of `torch.export.export` calls made so far (a list of one count)."""
    count = [0]
    export = torch.export.export

    def counted(*args, **kwargs):
        count[0] += 1
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counted)
    return count


def test_repeated_calls_at_one_shape_capture_once(exports):
    """The first call at a shape captures; later calls with other ids, other padding and
    other targets capture nothing and give what a fresh capture gives."""
    model = families.seeded_llama()
    rules = composites.cp_lrp(epsilon=0.0)
    prepared = text.prepare(model, rules=rules)
    assert exports[0] == 0 and len(prepared.plans) == 0
    first_ids = torch.randint(0, VOCAB, (2, 7))
    text.explain(prepared, first_ids)
    assert exports[0] == 1
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, VOCAB, (2, 7), generator=generator)
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[seed % 2, : seed + 1] = 0  # left padding of varying length
        held = text.explain(prepared, ids, attention_mask=mask, target=seed + 3)
        assert exports[0] == 1 + seed  # the unprepared model below captures on every call
        fresh = text.explain(model, ids, attention_mask=mask, target=seed + 3, rules=rules)
        torch.testing.assert_close(held.relevance, fresh.relevance, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # as generate() counts them
            logits = model(ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(held.logit, logits[:, -1, seed + 3], rtol=1e-12, atol=1e-12)
    assert len(prepared.plans) == 1


def test_a_new_shape_captures_once_more(exports):
    model = families.seeded_llama()
    prepared = text.prepare(model, (1, 5))
    assert exports[0] == 1
    text.explain(prepared, torch.randint(0, VOCAB, (1, 5)))
    assert exports[0] == 1
    text.explain(prepared, torch.randint(0, VOCAB, (1, 6)))
    text.explain(prepared, torch.randint(0, VOCAB, (1, 6)))
    assert exports[0] == 2 and len(prepared.plans) == 2


def test_prepared_rules_are_its_own():
    prepared = text.prepare(families.seeded_llama(), rules=composites.attnlrp())
    ids = torch.randint(0, VOCAB, (1, 4))
    with pytest.raises(InvalidRuleError, match="rules=None"):
        text.explain(prepared, ids, rules=composites.cp_lrp())
    with pytest.raises(InvalidInputError, match="causal"):
        text.explain(prepared, ids, causal=False)


def test_contrast_explains_the_logit_difference():
    """R(a - b) = R(a) - R(b): every rule is linear in the start relevance, and the
    start of the contrast is z_a e_a - z_b e_b. Under CP-LRP on a bias-free model the
    scores sum to z_a - z_b."""
    model = families.seeded_llama(1)
    prepared = text.prepare(model, rules=composites.cp_lrp(epsilon=0.0))
    ids = torch.randint(0, VOCAB, (2, 6))
    a, b = torch.tensor([3, 17]), torch.tensor([5, 5])
    contrast = text.explain(prepared, ids, target=a, contrast=b)
    first = text.explain(prepared, ids, target=a)
    second = text.explain(prepared, ids, target=b)
    torch.testing.assert_close(contrast.relevance, first.relevance - second.relevance)
    with torch.no_grad():
        logits = model(ids).logits[:, -1]
    difference = logits.gather(1, a[:, None])[:, 0] - logits.gather(1, b[:, None])[:, 0]
    torch.testing.assert_close(contrast.logit, difference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(contrast.scores.sum(1), difference, rtol=1e-9, atol=1e-12)


def test_a_contrast_out_of_range_is_refused():
    with pytest.raises(InvalidTargetError, match="contrast"):
        text.explain(families.seeded_llama(), torch.randint(0, VOCAB, (1, 4)), contrast=VOCAB)


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
def test_masks_per_layer_type_are_swapped_too(family, exports):
    """Gemma2 (sliding and global layers, soft-capping) and Qwen2 with
    `max_window_layers` take a mapping of masks per layer type: each entry is a buffer of
    the held capture, so a held call with other padding equals a fresh capture."""
    model = families.build(family)
    rules = composites.cp_lrp(epsilon=0.0)
    prepared = text.prepare(model, rules=rules)
    input_ids = torch.randint(3, model.config.vocab_size, (2, 10))
    text.explain(prepared, input_ids)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, :3] = 0
    held = text.explain(prepared, input_ids, attention_mask=mask)
    assert exports[0] == 1
    fresh = text.explain(model, input_ids, attention_mask=mask, rules=rules)
    torch.testing.assert_close(held.relevance, fresh.relevance, rtol=0, atol=0)


def test_check_false_checks_each_capture_once():
    """`prepare(check=False)`: the first call at a capture checks the logits against the
    model's own forward; later calls at that capture run no plain forward, where a
    checked prepared model runs one per call (counted by a forward hook on the model: the
    captured graph never calls the model's forward)."""
    model = families.seeded_llama()
    forwards = [0]
    model.register_forward_pre_hook(lambda module, args: forwards.__setitem__(0, forwards[0] + 1))
    checked = text.prepare(model)
    unchecked = text.prepare(model, check=False)
    input_ids = torch.randint(0, VOCAB, (2, 6))
    first = text.explain(unchecked, input_ids)  # captures and checks
    text.explain(checked, input_ids)  # captures
    assert len(unchecked.verified) == 1
    for seed in range(2):
        ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(seed))
        mask = torch.ones_like(ids)
        mask[0, : seed + 1] = 0
        forwards[0] = 0
        fast = text.explain(unchecked, ids, attention_mask=mask)
        assert forwards[0] == 0
        slow = text.explain(checked, ids, attention_mask=mask)
        assert forwards[0] == 1
        torch.testing.assert_close(fast.relevance, slow.relevance, rtol=0, atol=0)
    generation = text.explain_generation(unchecked, input_ids, generated_ids=first.target[:, None])
    torch.testing.assert_close(generation.logits[:, 0], first.logit)
