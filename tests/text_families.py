"""Tiny random-weight Hugging Face models, one per family, for the `lrpfn.text` tests.

Each builder returns a model (in eval mode, float64 unless asked otherwise) from a
transformers config class with hidden size 16-32 and 1-2 layers: nothing is downloaded.
Windows and chunks are shorter than the test sequences, so a model that attends with a
sliding window differs from one with full causal attention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VOCAB = 40
WINDOW = 3  # shorter than the 7-8 token test sequences

_DECODER = dict(
    vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
)  # fmt: skip


def _transformers():
    import transformers

    return transformers


def llama():
    t = _transformers()
    return t.LlamaForCausalLM(t.LlamaConfig(**_DECODER))


def seeded_llama(seed: int = 0):
    """`llama()` with its weights drawn after `torch.manual_seed(seed)`, float64, eval mode."""
    torch.manual_seed(seed)
    return llama().double().eval()


def mistral():
    t = _transformers()
    return t.MistralForCausalLM(t.MistralConfig(**_DECODER, sliding_window=WINDOW))


def qwen2():
    t = _transformers()
    config = t.Qwen2Config(
        **_DECODER, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1
    )
    return t.Qwen2ForCausalLM(config)


def qwen3():
    t = _transformers()
    config = t.Qwen3Config(**_DECODER, head_dim=8)
    return t.Qwen3ForCausalLM(config)


def gemma():
    t = _transformers()
    return t.GemmaForCausalLM(t.GemmaConfig(**_DECODER, head_dim=8))


def gemma2():
    t = _transformers()
    config = t.Gemma2Config(
        **_DECODER, head_dim=8, sliding_window=WINDOW, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
    )  # fmt: skip
    return t.Gemma2ForCausalLM(config)


def gemma3():
    t = _transformers()
    config = t.Gemma3TextConfig(
        **_DECODER, head_dim=8, sliding_window=WINDOW, sliding_window_pattern=2
    )
    return t.Gemma3ForCausalLM(config)


def phi3():
    t = _transformers()
    config = t.Phi3Config(**_DECODER, sliding_window=WINDOW, pad_token_id=0)
    return t.Phi3ForCausalLM(config)


def gpt2():
    t = _transformers()
    return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2))


def gpt_neox():
    t = _transformers()
    config = t.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return t.GPTNeoXForCausalLM(config)


def opt():
    t = _transformers()
    config = t.OPTConfig(
        vocab_size=VOCAB, hidden_size=16, ffn_dim=32, num_hidden_layers=2,
        num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=32,
    )  # fmt: skip
    return t.OPTForCausalLM(config)


def _encoder_config(config_class, **extra):
    return config_class(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, **extra,
    )  # fmt: skip


def bert():
    t = _transformers()
    return t.BertForMaskedLM(_encoder_config(t.BertConfig))


def roberta():
    t = _transformers()
    return t.RobertaForMaskedLM(_encoder_config(t.RobertaConfig))


def distilbert():
    t = _transformers()
    config = t.DistilBertConfig(
        vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=40
    )
    return t.DistilBertForMaskedLM(config)


def mixtral():
    t = _transformers()
    config = t.MixtralConfig(**_DECODER, num_local_experts=4, num_experts_per_tok=2)
    return t.MixtralForCausalLM(config)


def qwen3_moe():
    t = _transformers()
    config = t.Qwen3MoeConfig(
        **_DECODER, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        decoder_sparse_step=1,
    )  # fmt: skip
    return t.Qwen3MoeForCausalLM(config)


def qwen2_moe():
    t = _transformers()
    config = t.Qwen2MoeConfig(
        **_DECODER, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        shared_expert_intermediate_size=16,
    )  # fmt: skip
    return t.Qwen2MoeForCausalLM(config)


def t5():
    t = _transformers()
    config = t.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
        num_heads=2, decoder_start_token_id=0,
    )  # fmt: skip
    return t.T5ForConditionalGeneration(config)


def bart():
    t = _transformers()
    config = t.BartConfig(
        vocab_size=VOCAB, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=40,
    )  # fmt: skip
    return t.BartForConditionalGeneration(config)


DECODERS: dict[str, Callable] = {
    "llama": llama, "mistral": mistral, "qwen2": qwen2, "qwen3": qwen3, "gemma": gemma,
    "gemma2": gemma2, "gemma3": gemma3, "phi3": phi3, "gpt2": gpt2, "gpt_neox": gpt_neox,
    "opt": opt,
}  # fmt: skip
ENCODERS: dict[str, Callable] = {"bert": bert, "roberta": roberta, "distilbert": distilbert}
MIXTURES: dict[str, Callable] = {
    "mixtral": mixtral, "qwen2_moe": qwen2_moe, "qwen3_moe": qwen3_moe,
}  # fmt: skip
SEQ2SEQ: dict[str, Callable] = {"t5": t5, "bart": bart}


def build(name: str, dtype: torch.dtype = torch.float64, seed: int = 0, **options):
    """The family's tiny model, seeded, in eval mode, in `dtype`."""
    builders = {**DECODERS, **ENCODERS, **MIXTURES, **SEQ2SEQ}
    torch.manual_seed(seed)
    model = builders[name]()
    for key, value in options.items():
        setattr(model.config, key, value)
    return model.to(dtype).eval()


def classifier(name: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """The family's `...ForSequenceClassification` (3 labels, pad token 1), seeded."""
    t = _transformers()
    torch.manual_seed(seed)
    if name == "llama":
        model = t.LlamaForSequenceClassification(
            t.LlamaConfig(**_DECODER, num_labels=3, pad_token_id=1)
        )
    elif name == "qwen2":
        model = t.Qwen2ForSequenceClassification(
            t.Qwen2Config(**_DECODER, num_labels=3, pad_token_id=1)
        )
    elif name == "gpt2":
        config = t.GPT2Config(
            vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, num_labels=3, pad_token_id=1
        )
        model = t.GPT2ForSequenceClassification(config)
    else:
        model = t.BertForSequenceClassification(
            _encoder_config(t.BertConfig, num_labels=3, pad_token_id=1)
        )
    return model.to(dtype).eval()


def bias_free(model):
    """The same model with every bias and absolute position (and token type) embedding 0,
    so that a logit is a sum over the token embeddings only."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or any(
                part in name for part in ("position", "wpe", "token_type")
            ):
                parameter.zero_()
    return model
