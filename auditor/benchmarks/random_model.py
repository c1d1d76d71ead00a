"""`auditor bench random-model`: a random-weight model of a real shape, for scale and memory checks.

No 3-9B model can be downloaded here, so the memory bound of issue 28 is checked on models
with the shapes teams ship (Phi-3.5-mini's 3.8B, Llama-3.1-8B's) in the Llama architecture,
a real tokenizer (its vocabulary sets the embedding size) and random weights. Nothing about
such a model's answers means anything; its sizes, memory and speed are those of the real one.

The weights are written straight to float32 safetensors shards (at most `--shard-gb` each),
tensor by tensor from a seeded generator: the model is never built in memory, so an 8B model
(29.5 GB of float32) is written on a machine with 24 GB. Norm weights are ones, every other
tensor N(0, initializer_range), as transformers initializes a Llama.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from auditor.artifacts.models import load_tokenizer, resolve_model
from auditor.core.errors import AuditorError

log = logging.getLogger(__name__)

#: Llama-architecture shapes of models the reference studies and edge teams use (hidden, MLP, layers,
#: heads, KV heads, RoPE base, context), from their published config.json files.
SHAPES: dict[str, dict] = {
    "phi-3.5-mini": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, rope_theta=10000.0, max_position_embeddings=4096),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, rope_theta=500000.0, max_position_embeddings=8192),
}


def register(sub) -> None:
    p = sub.add_parser("random-model", help="write a random-weight model of a real shape (float32 safetensors "
                                            "shards, never built in memory) with a real tokenizer")
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--out", required=True, help="new directory to write")
    p.add_argument("--tokenizer", default=None, help="model whose tokenizer to use (default: the embedded smollm2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-gb", type=float, default=2.0, help="largest shard in GB (default 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    out = Path(args.out)
    if out.exists():
        raise AuditorError(f"--out {out}: exists; give a new directory")
    if not args.shard_gb > 0:
        raise AuditorError(f"--shard-gb {args.shard_gb}: must be a positive number of GB")
    tokenizer = load_tokenizer(resolve_model(args.tokenizer))
    start = time.perf_counter()
    n_params = write_random_model(out, SHAPES[args.shape], tokenizer, seed=args.seed,
                                  shard_bytes=int(args.shard_gb * 1e9))
    print(f"{out}: {args.shape} shape, {n_params / 1e9:.2f}B parameters, float32 "
          f"({4 * n_params / 1e9:.1f} GB), written in {time.perf_counter() - start:.0f}s")
    return 0


def write_random_model(out: Path, shape: dict, tokenizer, *, seed: int = 0, shard_bytes: int = 2_000_000_000) -> int:
    """Write config, tokenizer and random float32 weights of a Llama of `shape` into `out`; return the
    parameter count. The parameters' names and shapes come from the model built on the meta device."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=False, rms_norm_eps=1e-5,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **shape)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = [(name, tuple(t.shape)) for name, t in skeleton.state_dict().items()]
    out.mkdir(parents=True)
    config.architectures = [type(skeleton).__name__]
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)

    generator = torch.Generator().manual_seed(seed)
    shards: list[list[tuple[str, tuple]]] = [[]]
    size = 0
    for name, dims in tensors:  # consecutive tensors into shards of at most shard_bytes
        nbytes = 4 * int(torch.Size(dims).numel())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += nbytes
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        data = {}
        for name, dims in shard:
            data[name] = (torch.ones(dims) if len(dims) == 1
                          else torch.empty(dims).normal_(0.0, config.initializer_range, generator=generator))
            weight_map[name] = file
            total += data[name].numel()
        save_file(data, str(out / file), metadata={"format": "pt"})
        del data
        log.info("wrote %s", file)
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 4 * total}, "weight_map": weight_map}, indent=2), encoding="utf-8")
    return total
