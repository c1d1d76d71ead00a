"""HF Llama-family model + tokenizer -> GGUF (F32 or F16) on gguf-py's writer and tensor-name map.

A minimal converter, written because the registry's `convert-hf-to-gguf`
package ships its own top-level `gguf` module that differs from (and would
overwrite) the `gguf` package installed here (see docs/gguf.md). It covers what
llama.cpp's `convert_hf_to_gguf.py` does for `LlamaForCausalLM` with a GPT-2
style byte-level BPE tokenizer (SmolLM2, Llama 3):

- hyperparameters under the `llama.*` keys llama.cpp reads;
- tensors renamed with `gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)`;
- q_proj / k_proj rows permuted from HF's rotary layout (rotate_half: the two
  halves of each head) to GGML's (adjacent pairs), exactly as upstream's
  `LlamaModel.permute`;
- tied embeddings: no `output.weight` (llama.cpp reuses `token_embd.weight`);
- F16: 2-D weights in F16, 1-D norms in F32 (as upstream); F32: everything F32;
- tokenizer: vocab, token types, merges, special ids, add-BOS flag, the
  pre-tokenizer name and the chat template, from an HF tokenizer or copied from
  a source GGUF (`TokenizerMetadata.from_gguf`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import numpy as np

from auditor.core.errors import ModelError
from auditor.core.files import atomic_path

log = logging.getLogger(__name__)

OutType = Literal["f32", "f16"]
OUTTYPES: tuple[str, ...] = ("f32", "f16")

# llama.cpp's pre-tokenizer check text and the hashes of its token ids, copied
# verbatim from upstream convert_hf_to_gguf.py (get_vocab_base_pre) for the
# llama-family BPE tokenizers this converter supports.
_CHKTXT = (
    '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) '
    '✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
    '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
    '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'
)
KNOWN_PRE_TOKENIZERS: dict[str, str] = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
}

# gguf.TokenType values (kept as ints so the metadata is plain data).
_NORMAL, _UNUSED, _CONTROL, _USER_DEFINED = 1, 5, 3, 4


@dataclass(frozen=True)
class TokenizerMetadata:
    """Everything llama.cpp needs to tokenize as the HF tokenizer does (GGUF `tokenizer.*` keys)."""

    model: str  # tokenizer.ggml.model, "gpt2" for byte-level BPE
    pre: str  # tokenizer.ggml.pre: llama.cpp's pre-tokenizer regex set
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    special_ids: tuple[tuple[str, int], ...]  # (bos|eos|unk|pad, id)
    add_bos: bool
    add_space_prefix: bool
    chat_template: str | None
    origin: str  # where the metadata came from, for provenance

    @classmethod
    def from_gguf(cls, path: Path) -> "TokenizerMetadata":
        """Copy the tokenizer of an existing GGUF (e.g. the one a model was loaded from)."""
        from gguf import GGUFReader

        try:
            fields = GGUFReader(str(path)).fields
        except Exception as exc:  # truncated or not a GGUF
            raise ModelError(f"{path}: unreadable GGUF ({exc})") from None

        def value(key: str, default: Any = None) -> Any:
            field = fields.get(key)
            return default if field is None else field.contents()

        if value("tokenizer.ggml.model") is None or value("tokenizer.ggml.tokens") is None:
            raise ModelError(f"{path}: GGUF has no tokenizer (tokenizer.ggml.model / tokens missing)")
        specials = tuple((kind, int(value(f"tokenizer.ggml.{key}_token_id")))
                         for kind, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
                         if value(f"tokenizer.ggml.{key}_token_id") is not None)
        return cls(
            model=str(value("tokenizer.ggml.model")),
            pre=str(value("tokenizer.ggml.pre", "default")),
            tokens=tuple(value("tokenizer.ggml.tokens")),
            token_types=tuple(int(t) for t in value("tokenizer.ggml.token_type", [])),
            merges=tuple(value("tokenizer.ggml.merges", [])),
            special_ids=specials,
            add_bos=bool(value("tokenizer.ggml.add_bos_token", False)),
            add_space_prefix=bool(value("tokenizer.ggml.add_space_prefix", False)),
            chat_template=value("tokenizer.chat_template"),
            origin=f"copied from GGUF {path}",
        )

    @classmethod
    def from_hf(cls, tokenizer, vocab_size: int, *, pre: str | None = None) -> "TokenizerMetadata":
        """Build from an HF fast tokenizer (GPT-2 style byte-level BPE), as upstream's `_set_vocab_gpt2`.

        Ids the tokenizer does not use up to `vocab_size` become "[PAD<i>]" tokens of
        type UNUSED; added special tokens are CONTROL, other added tokens USER_DEFINED.
        `pre` overrides the detected llama.cpp pre-tokenizer name.
        """
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelError(f"{type(tokenizer).__name__}: only fast (tokenizers) BPE tokenizers can be converted")
        spec = json.loads(backend.to_str())
        model = spec.get("model") or {}
        pre_tok = spec.get("pre_tokenizer") or {}
        pre_types = {p.get("type") for p in pre_tok.get("pretokenizers", [pre_tok])}
        if model.get("type") != "BPE" or "ByteLevel" not in pre_types:
            raise ModelError(f"tokenizer {model.get('type')!r} with pre-tokenizer {sorted(map(str, pre_types))}: "
                             "the minimal converter supports GPT-2 style byte-level BPE only")
        vocab = tokenizer.get_vocab()
        if max(vocab.values()) >= vocab_size:
            raise ModelError(f"tokenizer has id {max(vocab.values())} but the model's vocab_size is {vocab_size}")
        reverse = {i: t for t, i in vocab.items()}
        added = {i: tok for i, tok in tokenizer.added_tokens_decoder.items()}
        tokens, types = [], []
        for i in range(vocab_size):
            if i not in reverse:
                tokens.append(f"[PAD{i}]")
                types.append(_UNUSED)
            elif i in added:
                tokens.append(reverse[i])
                types.append(_CONTROL if added[i].special else _USER_DEFINED)
            else:
                tokens.append(reverse[i])
                types.append(_NORMAL)
        merges = tuple(m if isinstance(m, str) else " ".join(m) for m in model.get("merges", []))
        specials = tuple((kind, int(getattr(tokenizer, f"{kind}_token_id")))
                         for kind in ("bos", "eos", "unk", "pad")
                         if getattr(tokenizer, f"{kind}_token_id", None) is not None)
        byte_level = next((p for p in pre_tok.get("pretokenizers", [pre_tok]) if p.get("type") == "ByteLevel"), {})
        template = getattr(tokenizer, "chat_template", None)
        return cls(
            model="gpt2",
            pre=pre or detect_pre_tokenizer(tokenizer),
            tokens=tuple(tokens),
            token_types=tuple(types),
            merges=merges,
            special_ids=specials,
            add_bos=bool(getattr(tokenizer, "add_bos_token", False)),
            add_space_prefix=bool(byte_level.get("add_prefix_space", False)),
            chat_template=template if isinstance(template, str) else None,
            origin=f"HF tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}",
        )


def detect_pre_tokenizer(tokenizer) -> str:
    """llama.cpp's pre-tokenizer name, found as upstream does: sha256 of the ids of a check text."""
    digest = sha256(str(tokenizer.encode(_CHKTXT)).encode()).hexdigest()
    name = KNOWN_PRE_TOKENIZERS.get(digest)
    if name is None:
        raise ModelError(f"unknown BPE pre-tokenizer (check hash {digest}); known: "
                         f"{', '.join(sorted(KNOWN_PRE_TOKENIZERS.values()))}. Pass pre=NAME if you know it")
    return name


@dataclass(frozen=True)
class GGUFExport:
    """A written GGUF file and what went into it."""

    path: Path
    outtype: str
    n_tensors: int
    size_bytes: int
    tokenizer_origin: str


def llama_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k projection rows from HF's rotary layout to GGML's (upstream `LlamaModel.permute`).

    Per head of d rows, HF rotates pairs (j, j + d/2); GGML rotates (2j, 2j + 1).
    Row r = h*d + half*(d/2) + j moves to h*d + 2j + half. For k_proj pass n_head = n_kv_heads.
    """
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2)
            .reshape(weight.shape))


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ModelError(f"rope_type {rope_type!r}: the minimal GGUF converter supports default RoPE only")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is None:
        raise ModelError("model config has no rope_theta")
    return float(theta)


def _check_supported(model) -> None:
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise ModelError(f"model_type {getattr(config, 'model_type', None)!r}: the GGUF converter supports "
                         "Llama-family models (LlamaForCausalLM) only")
    if getattr(config, "quantization_config", None) is not None or getattr(model, "is_quantized", False):
        raise ModelError("a quantized torch model (e.g. bitsandbytes) has no GGUF form; export the float model")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ModelError("attention_bias / mlp_bias: the minimal GGUF converter supports bias-free Llama only")


def write_gguf(model, path: Path, *, tokenizer: TokenizerMetadata | Any, outtype: OutType = "f16",
               name: str | None = None) -> GGUFExport:
    """Write `model` (LlamaForCausalLM, float weights) to `path` as GGUF F32 or F16.

    `tokenizer` is an HF tokenizer or a TokenizerMetadata (e.g. copied from the
    GGUF the model was loaded from). The file is written under a temporary name
    and renamed when complete, so a crash never leaves a half-written GGUF.
    """
    import gguf
    import torch

    if outtype not in OUTTYPES:
        raise ModelError(f"outtype {outtype!r}: valid GGUF output types are {', '.join(OUTTYPES)}")
    _check_supported(model)
    config = model.config
    meta = tokenizer if isinstance(tokenizer, TokenizerMetadata) else TokenizerMetadata.from_hf(tokenizer, config.vocab_size)
    if len(meta.tokens) != config.vocab_size:
        raise ModelError(f"tokenizer has {len(meta.tokens)} tokens but the model's vocab_size is {config.vocab_size}")
    n_layers, n_head, n_kv = config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    tied = bool(getattr(config, "tie_word_embeddings", False))
    file_type = gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
            try:
                writer.add_type(gguf.GGUFType.MODEL)
                writer.add_name(name or Path(str(getattr(config, "_name_or_path", "") or "model")).name)
                writer.add_block_count(n_layers)
                writer.add_context_length(config.max_position_embeddings)
                writer.add_embedding_length(config.hidden_size)
                writer.add_feed_forward_length(config.intermediate_size)
                writer.add_head_count(n_head)
                writer.add_head_count_kv(n_kv)
                writer.add_rope_freq_base(_rope_theta(config))
                writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
                writer.add_file_type(file_type)
                writer.add_vocab_size(config.vocab_size)
                writer.add_rope_dimension_count(head_dim)
                if head_dim != config.hidden_size // n_head:
                    writer.add_key_length(head_dim)
                    writer.add_value_length(head_dim)
                _add_tokenizer(writer, meta)

                names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
                n_tensors = 0
                with torch.no_grad():
                    for hf_name, tensor in model.state_dict().items():
                        if tied and hf_name == "lm_head.weight":
                            continue  # llama.cpp falls back to token_embd when output.weight is absent
                        if not tensor.is_floating_point():
                            raise ModelError(f"{hf_name}: dtype {tensor.dtype} is not a float weight")
                        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                        if gguf_name is None:
                            raise ModelError(f"{hf_name}: no GGUF name for this tensor in the llama architecture")
                        data = tensor.detach().to("cpu", torch.float32).numpy()
                        if hf_name.endswith("q_proj.weight"):
                            data = llama_permute(data, n_head)
                        elif hf_name.endswith("k_proj.weight"):
                            data = llama_permute(data, n_kv)
                        if outtype == "f16" and data.ndim > 1:
                            data = data.astype(np.float16)
                            if not np.isfinite(data).all():
                                raise ModelError(f"{hf_name}: values overflow float16; export with outtype f32")
                        writer.add_tensor(gguf_name, np.ascontiguousarray(data))
                        n_tensors += 1
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_tensors_to_file()
            finally:
                writer.close()
    except OSError as exc:
        raise ModelError(f"{path}: cannot write GGUF ({exc.strerror or exc})") from None
    log.info("wrote %s (%s, %d tensors, tokenizer %s)", path, outtype, n_tensors, meta.origin)
    return GGUFExport(path, outtype, n_tensors, path.stat().st_size, meta.origin)


def _add_tokenizer(writer, meta: TokenizerMetadata) -> None:
    writer.add_tokenizer_model(meta.model)
    writer.add_tokenizer_pre(meta.pre)
    writer.add_token_list(list(meta.tokens))
    writer.add_token_types(list(meta.token_types))
    if meta.merges:
        writer.add_token_merges(list(meta.merges))
    for kind, token_id in meta.special_ids:
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(meta.add_bos)
    writer.add_add_space_prefix(meta.add_space_prefix)
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)


def tokenizer_for_model(model) -> TokenizerMetadata:
    """The tokenizer of a model loaded by `auditor.artifacts.models.load_model`, found from its name_or_path.

    An HF directory with a tokenizer gives an HF tokenizer; a GGUF file, or a
    directory holding exactly one GGUF (the embedded default's layout), gives
    that GGUF's tokenizer metadata copied verbatim. Anything else is a ModelError
    asking the caller to pass the tokenizer explicitly.
    """
    where = Path(str(getattr(model.config, "_name_or_path", "") or ""))
    vocab_size = model.config.vocab_size
    if where.is_file() and where.suffix == ".gguf":
        return TokenizerMetadata.from_gguf(where)
    if where.is_dir():
        if (where / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            return TokenizerMetadata.from_hf(AutoTokenizer.from_pretrained(str(where)), vocab_size)
        ggufs = sorted(where.glob("*.gguf"))
        if len(ggufs) == 1:
            return TokenizerMetadata.from_gguf(ggufs[0])
    raise ModelError(f"cannot find the tokenizer of the model loaded from {str(where) or '<unknown>'!r}; "
                     "pass it explicitly (tokenizer=...)")
