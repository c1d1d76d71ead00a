"""Tiny random models of each supported family, built from configs (2 layers, Gemma 3: 6; hidden 64).

Llama, Gemma 3 and Phi-3 share the SmolLM2 tokenizer (vocab 49152): llama.cpp's
converter picks its vocabulary code by family, and a GPT-2 style BPE it recognises
works for these (Phi-3's converter takes that path when the tokenizer class is
GPT2Tokenizer, see `family_tokenizer`). Qwen2's GGUF export needs the real Qwen2
tokenizer (tests/families/test_families.py says why and where it comes from).
"""
from __future__ import annotations

FAMILIES = ("llama", "gemma3", "qwen2", "phi3")
VOCAB = 49152
# Gemma 3's local layers see a window this wide; prompts in the tests run past it.
GEMMA3_WINDOW = 8


def family_config(family: str, **overrides):
    from transformers import Gemma3TextConfig, LlamaConfig, Phi3Config, Qwen2Config

    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                  pad_token_id=2)
    if family == "llama":
        kwargs = dict(common, num_hidden_layers=2, tie_word_embeddings=True)
        cls = LlamaConfig
    elif family == "gemma3":
        # Five sliding layers, then a global one: Gemma 3's 5:1 layout, which llama.cpp assumes
        # (it does not read layer_types). Global layers use another RoPE base than local ones.
        kwargs = dict(common, num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16,
                      sliding_window=GEMMA3_WINDOW, layer_types=["sliding_attention"] * 5 + ["full_attention"])
        cls = Gemma3TextConfig
    elif family == "qwen2":
        kwargs = dict(common, num_hidden_layers=2, tie_word_embeddings=True)  # q/k/v carry biases
        cls = Qwen2Config
    elif family == "phi3":
        kwargs = dict(common, num_hidden_layers=2, tie_word_embeddings=False)  # fused qkv and gate_up
        cls = Phi3Config
    else:
        raise ValueError(family)
    kwargs.update(overrides)
    return cls(**kwargs)


def make_family_model(family: str, seed: int = 0, **overrides):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, **overrides), dtype=torch.float32)
    # Random norms: an all-ones norm would hide a converter that drops or shifts them (Gemma adds 1).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0 if family == "gemma3" else 1.0, 0.1)
    model.config.architectures = [type(model).__name__]
    return model.eval()


def family_tokenizer(family: str, smollm2_tokenizer):
    """The tokenizer each family's export is written with (Phi-3: the same BPE as a GPT2Tokenizer,
    which its converter reads without re-deriving the pre-tokenizer from the model type)."""
    if family == "qwen2":
        raise ValueError("Qwen2 exports need the real Qwen2 tokenizer (the qwen2_tokenizer fixture)")
    if family != "phi3":
        return smollm2_tokenizer
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast(tokenizer_object=smollm2_tokenizer.backend_tokenizer,
                             bos_token=smollm2_tokenizer.bos_token, eos_token=smollm2_tokenizer.eos_token,
                             unk_token=smollm2_tokenizer.unk_token, pad_token=smollm2_tokenizer.pad_token)
