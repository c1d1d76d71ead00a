"""`auditor bench free-text`: how often a model's greedy free-text answer names its letter answer.

    auditor bench free-text [--model smollm2|PATH] [--runtime auto|torch|llama.cpp] [--n-items 50]
                            [--bbq DIR] [--threads N] [--max-new-tokens 16]

The dense model answers n BBQ items (stratified sample, seed 0, both conditions,
answer order 0) twice: by the argmax of the option letters (strict) and in free
text, greedy (`auditor.analysis.generative`). Runtime auto: a GGUF file in
llama.cpp, an HF folder in torch (float32; a GGUF is dequantized for torch).
Prints JSON: prompts, unparsed answers, agreement on prompts valid in both,
accuracy of each, wall times. The figures in docs/statistics.md ("Free text")
come from this command.
"""
from __future__ import annotations

import json
import time

from auditor.analysis.generative import generation_table, score_text_protocol
from auditor.analysis.metrics import accuracy
from auditor.analysis.protocols import select_protocol
from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.data.bbq import select_items
from auditor.data.prompt_format import choose_format
from auditor.data.records import GENERATIVE, STRICT
from auditor.data.sources import resolve_bbq
from auditor.scoring.backends.llama_backend import LlamaCppBackend
from auditor.scoring.backends.torch_backend import TorchBackend
from auditor.scoring.engine import PromptSet, score
from auditor.scoring.generative import GenerationSettings, build_text_prompts


def measure(model: str, n_items: int, bbq: str | None, threads: int | None, max_new_tokens: int,
            runtime: str = "auto") -> dict:
    """The figures printed by this command (module docstring)."""
    import pandas as pd

    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    data = resolve_bbq(bbq)
    items = select_items([data.path], n=n_items, seed=0).items
    fmt = choose_format(bool(getattr(tokenizer, "chat_template", None)))
    if runtime == "llama.cpp" or runtime == "auto" and source.kind == "gguf":
        backend = LlamaCppBackend(source.path, n_threads=threads)
    else:
        import torch

        if threads:
            torch.set_num_threads(threads)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        backend = TorchBackend(load_model(source), pad_id=int(pad))
    start = time.perf_counter()
    letters = score(backend, PromptSet.build(tokenizer, items, (0,), prompt_format=fmt), "dense").records
    letters_s = time.perf_counter() - start
    prompts = build_text_prompts(fmt.wrap(tokenizer), items, (0,))
    text, figures = score_text_protocol(backend, tokenizer, prompts, "dense", GENERATIVE,
                                        GenerationSettings(max_new_tokens=max_new_tokens))
    backend.close()
    records = pd.concat([letters, text], ignore_index=True)
    row = generation_table(records).iloc[0]
    return {"model": source.describe(), "data": data.origin, "runtime": backend.name, "prompt_format": fmt.version,
            "n_prompts": int(row["n_records"]), "n_unparsed": int(row["n_unparsed"]),
            "n_compared": int(row["n_compared"]), "agreement": float(row["agreement"]),
            "accuracy_letters": accuracy(select_protocol(records, STRICT)),
            "accuracy_free_text": accuracy(select_protocol(records, GENERATIVE)),
            "letters_wall_s": round(letters_s, 1), "free_text_wall_s": round(figures[f"{GENERATIVE}_wall_s"], 1),
            "max_new_tokens": max_new_tokens}


def register(sub) -> None:
    p = sub.add_parser("free-text", help="dense model: how often its greedy free-text answer names its letter answer")
    p.add_argument("--model", default="smollm2", help="smollm2 (default), an HF model folder or a GGUF file")
    p.add_argument("--runtime", choices=("auto", "torch", "llama.cpp"), default="auto",
                   help="auto (default): llama.cpp for a GGUF, torch for an HF folder")
    p.add_argument("--n-items", type=int, default=50, help="stratified BBQ sample size (default 50)")
    p.add_argument("--bbq", default=None, help="BBQ folder (default: auditor.data.sources.resolve_bbq)")
    p.add_argument("--threads", type=int, default=None, help="torch / llama.cpp threads")
    p.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    p.set_defaults(func=run)


def run(args) -> int:
    print(json.dumps(measure(args.model, args.n_items, args.bbq, args.threads, args.max_new_tokens, args.runtime),
                     indent=2))
    return 0
