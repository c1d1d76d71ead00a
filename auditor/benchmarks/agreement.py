"""`auditor bench agreement`: the dense model in llama.cpp (GGUF F32) vs torch on the fixture items.

Acceptance (issue 4): the same tokens for every prompt, letter-logit max abs
difference below 0.05, and the same chosen answer on at least 99% of prompts.
The torch side is one unpadded forward pass per full prompt (the model's own
computation, no batching effects); the llama.cpp side is LlamaCppBackend with
its prefix KV reuse. Prints the figures; asserts nothing.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from auditor.artifacts.gguf_writer import write_gguf
from auditor.artifacts.models import load_model, load_tokenizer, resolve_model
from auditor.data.bbq import select_items
from auditor.data.prompts import prompt_text
from auditor.data.sources import resolve_bbq
from auditor.scoring.backends.llama_backend import LlamaCppBackend, log_softmax
from auditor.scoring.engine import PromptSet

LOGIT_BOUND = 0.05
SAME_ANSWER_BOUND = 0.99


def register(sub) -> None:
    p = sub.add_parser("agreement", help="dense model: llama.cpp (GGUF F32) vs torch letter logits on the fixture items")
    p.add_argument("--model", default=None, help="HF directory, GGUF file, or 'smollm2' (default)")
    p.add_argument("--bbq", default=None, help="BBQ directory or file (default: fixtures/bbq_sample)")
    p.add_argument("--seeds", default="0,1,2", help="answer-order seeds (default 0,1,2)")
    p.add_argument("--outtype", choices=("f32", "f16"), default="f32", help="GGUF type of the export (default f32)")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def compare(torch_logits: np.ndarray, llama_logits: np.ndarray, torch_logprobs: np.ndarray,
            llama_logprobs: np.ndarray) -> dict:
    """Agreement figures over prompts (rows) x letters (columns); answers are the argmax letter.

    same_answer_share = n(argmax equal) / n prompts (NaN with no prompts).
    """
    n = len(torch_logits)
    agree = torch_logits.argmax(1) == llama_logits.argmax(1)
    same = int(agree.sum())
    # How close to a tie torch itself was where the runtimes disagree (top-1 minus top-2 letter logit).
    top2 = np.sort(torch_logits, axis=1)[:, -2:] if n else np.empty((0, 2))
    margins = (top2[:, 1] - top2[:, 0])[~agree]
    return {
        "n_prompts": n,
        "letter_logit_max_abs_diff": float(np.abs(torch_logits - llama_logits).max()) if n else float("nan"),
        "letter_logprob_max_abs_diff": float(np.abs(torch_logprobs - llama_logprobs).max()) if n else float("nan"),
        "n_same_answer": same,
        "same_answer_share": same / n if n else float("nan"),
        "torch_margin_where_different": [float(m) for m in margins],
    }


def run(args) -> int:
    import torch


    seeds = tuple(int(s) for s in args.seeds.split(","))
    data = resolve_bbq(args.bbq)
    selection = select_items([data.path], origin=data.origin)
    source = resolve_model(args.model)
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(source)
    model = load_model(source)
    load_s = time.perf_counter() - t0
    prompts = PromptSet.build(tokenizer, selection.items, seeds)
    letters = list(prompts.letter_ids)

    with tempfile.TemporaryDirectory(prefix="auditor-agreement-") as tmp:
        t0 = time.perf_counter()
        exported = write_gguf(model, Path(tmp) / f"dense-{args.outtype}.gguf", tokenizer=tokenizer,
                              outtype=args.outtype, name=f"{source.name} dense")
        export_s = time.perf_counter() - t0
        backend = LlamaCppBackend(exported.path, n_threads=args.threads)
        try:
            # Same tokens: llama.cpp's tokenization of each prompt text vs the ids every backend is fed.
            n_same_tokens = 0
            for item, group in zip(prompts.items, prompts.groups):
                for s, perm in enumerate(group.perms):
                    n_same_tokens += backend.tokenize(prompt_text(tokenizer, item, perm)) == list(group.full_ids(s))
            t0 = time.perf_counter()
            scores = backend.letter_scores(prompts.groups, letters)
            llama_s = time.perf_counter() - t0
        finally:
            backend.close()

    t0 = time.perf_counter()
    torch_logits, torch_logprobs = [], []
    with torch.inference_mode():
        for group in prompts.groups:
            for s in range(len(group.suffix_ids)):
                ids = torch.tensor([group.full_ids(s)])
                last = model(input_ids=ids, logits_to_keep=1, use_cache=False).logits[0, -1].float().numpy()
                torch_logits.append(last[letters])
                torch_logprobs.append(log_softmax(last)[letters])
    torch_s = time.perf_counter() - t0

    figures = compare(np.array(torch_logits), np.concatenate([sc.logits for sc in scores]),
                      np.array(torch_logprobs), np.concatenate([sc.logprobs for sc in scores]))
    figures = {
        "model": source.describe(),
        "data": selection.origin,
        "n_items": len(prompts.items),
        "seeds": list(seeds),
        "gguf_outtype": exported.outtype,
        "gguf_size_bytes": exported.size_bytes,
        "tokenizer_origin": exported.tokenizer_origin,
        "n_same_tokens": n_same_tokens,
        **figures,
        "letter_logit_bound": LOGIT_BOUND,
        "same_answer_bound": SAME_ANSWER_BOUND,
        "load_s": load_s,
        "export_s": export_s,
        "llama_cpp_scoring_s": llama_s,
        "torch_scoring_s": torch_s,
    }
    n = figures["n_prompts"]
    figures["meets_acceptance"] = bool(
        figures["n_same_tokens"] == n
        and figures["letter_logit_max_abs_diff"] < LOGIT_BOUND
        and figures["same_answer_share"] >= SAME_ANSWER_BOUND
    )
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['model']}")
        print(f"data: {figures['data']}; {figures['n_items']} items x seeds {args.seeds} = {n} prompts")
        print(f"GGUF {exported.outtype.upper()} export: {exported.size_bytes / 2**20:.0f} MiB in {export_s:.1f} s "
              f"(tokenizer: {exported.tokenizer_origin})")
        print(f"same tokens (llama.cpp vs HF): {n_same_tokens}/{n}")
        print(f"letter-logit max abs diff: {figures['letter_logit_max_abs_diff']:.2e} (bound {LOGIT_BOUND})")
        print(f"letter log-prob max abs diff: {figures['letter_logprob_max_abs_diff']:.2e}")
        print(f"same answer: {figures['n_same_answer']}/{n} = {100 * figures['same_answer_share']:.1f}% "
              f"(bound {100 * SAME_ANSWER_BOUND:.0f}%)")
        if figures["torch_margin_where_different"]:
            print("torch's top-1 minus top-2 letter logit where the answers differ: "
                  + ", ".join(f"{m:.2e}" for m in figures["torch_margin_where_different"]))
        print(f"scoring: llama.cpp {llama_s:.1f} s, torch {torch_s:.1f} s; load {load_s:.1f} s")
        print(f"acceptance: {'met' if figures['meets_acceptance'] else 'NOT met'}")
    return 0
