"""One measurement in a fresh process: load an artifact in its runtime, time prefill, decode and BBQ scoring.

Run as `python -m auditor.measure.worker REQUEST.json RESULT.json` by auditor.measure.measurement,
which owns the statistics; this module only times things. A fresh process per
(variant, format) keeps load time and peak memory free of the parent's state.

Order inside the process:
  1. import the runtime and the model's code, read RSS (the process's baseline before any
     weights); library imports are process start-up, not load time;
  2. load the artifact once, timed;
  3. time to first token, cold: the first prompt after loading through to its first greedy
     token (what a user's first request waits for once the model is loaded);
     then one untimed warm-up prefill, then `repeats` timed prefills (one forward over the
     prompt, batch 1, logits of the last position only) and `repeats` timed greedy
     decodes of `new_tokens` tokens each (the prefill before each decode is untimed);
  4. score the BBQ prompt groups once through the project's backend for the runtime
     (ms per prompt, timed as engine.score times it);
  5. read peak RSS (VmHWM): one model's worth of memory, nothing re-loaded yet;
  6. drop the model and load it `repeats - 1` more times, timed, for the load spread.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from auditor.artifacts.models import load_model, resolve_model
from auditor.core.rss import vm_hwm_bytes
from auditor.data.prompts import PromptGroup
from auditor.scoring.backends.llama_amx import extra_weight_buffers
from auditor.scoring.backends.llama_backend import LlamaCppBackend, open_llama
from auditor.scoring.backends.torch_backend import TorchBackend


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _groups(request: dict):
    return [PromptGroup(g["item_id"], tuple(tuple(p) for p in g["perms"]), tuple(g["prefix_ids"]),
                        tuple(tuple(s) for s in g["suffix_ids"])) for g in request["bbq_groups"]]


def _import_model_code(path: str) -> None:
    """Import the model class (and bitsandbytes for a bnb model) now, so that load_s times loading
    weights, not transformers' lazy imports: library imports are process start-up, paid once."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(path)
    MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # the lazy mapping imports the modeling module
    if getattr(config, "quantization_config", None) is not None:
        import bitsandbytes  # noqa: F401


class _Torch:
    """An HF directory (float or bitsandbytes) through transformers."""

    def __init__(self, request: dict) -> None:
        import torch

        torch.set_num_threads(request["n_threads"])
        self.torch = torch
        self.path = request["path"]
        self.model: Any = None
        _import_model_code(self.path)

    def load(self) -> None:
        self.model = load_model(resolve_model(self.path))

    def unload(self) -> None:
        self.model = None

    def _forward(self, ids, cache=None):
        return self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

    def first_token(self, prompt: Sequence[int]) -> float:
        torch = self.torch
        with torch.inference_mode():
            start = time.perf_counter()
            out = self._forward(torch.tensor([list(prompt)]))
            int(out.logits[0, -1].argmax())
            return time.perf_counter() - start

    def prefill(self, prompt: Sequence[int]) -> float:
        torch = self.torch
        ids = torch.tensor([list(prompt)])
        with torch.inference_mode():
            start = time.perf_counter()
            self.model(input_ids=ids, use_cache=False, logits_to_keep=1)
            return time.perf_counter() - start

    def decode(self, prompt: Sequence[int], new_tokens: int) -> tuple[float, list[int]]:
        torch = self.torch
        with torch.inference_mode():
            out = self._forward(torch.tensor([list(prompt)]))
            token = int(out.logits[0, -1].argmax())
            generated = [token]
            start = time.perf_counter()
            for _ in range(new_tokens):
                out = self._forward(torch.tensor([[token]]), out.past_key_values)
                token = int(out.logits[0, -1].argmax())
                generated.append(token)
            return time.perf_counter() - start, generated

    def backend(self, pad_id: int):
        return TorchBackend(self.model, batch_size=16, pad_id=pad_id)


class _LlamaCpp:
    """A GGUF file through llama-cpp-python."""

    def __init__(self, request: dict) -> None:
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.path = request["path"]
        self.n_threads = request["n_threads"]
        self.n_ctx = request["n_ctx"]
        self.llm: Any = None
        # Asked before the timed load (the first open of a file may probe the build), and reported.
        self.extra_buffers = extra_weight_buffers(self.path)

    def load(self) -> None:
        self.llm = open_llama(self.path, extra_buffers=self.extra_buffers, n_ctx=self.n_ctx, n_batch=self.n_ctx,
                              n_threads=self.n_threads, n_threads_batch=self.n_threads, logits_all=False, verbose=False)

    def unload(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None

    def prefill(self, prompt: Sequence[int]) -> float:
        self.llm.reset()  # eval() then drops the whole KV cache from position 0
        start = time.perf_counter()
        self.llm.eval(list(prompt))
        return time.perf_counter() - start

    def first_token(self, prompt: Sequence[int]) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(list(prompt))
        self._argmax_last()
        return time.perf_counter() - start

    def _argmax_last(self) -> int:
        import numpy as np

        ptr = self.llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).argmax())

    def decode(self, prompt: Sequence[int], new_tokens: int) -> tuple[float, list[int]]:
        self.llm.reset()
        self.llm.eval(list(prompt))
        token = self._argmax_last()
        generated = [token]
        start = time.perf_counter()
        for _ in range(new_tokens):
            self.llm.eval([token])
            token = self._argmax_last()
            generated.append(token)
        return time.perf_counter() - start, generated

    def backend(self, pad_id: int):
        self.unload()  # the backend opens its own context on the same file
        return LlamaCppBackend(self.path, n_ctx=self.n_ctx, n_threads=self.n_threads)


RUNTIMES: dict[str, Callable[[dict], Any]] = {"torch": _Torch, "llama.cpp": _LlamaCpp}


def measure(request: dict) -> dict:
    """Run the measurement described by `request` (see auditor.measure.measurement.worker_request)."""
    runtime = RUNTIMES[request["runtime"]](request)
    prompt, repeats = request["prompt_ids"], request["repeats"]
    rss_before = _rss_bytes()
    start = time.perf_counter()
    runtime.load()
    load_s = [time.perf_counter() - start]
    ttft_s = [runtime.first_token(prompt)]
    runtime.prefill(prompt)  # warm-up: first-call allocations and kernel selection
    prefill_s = [runtime.prefill(prompt) for _ in range(repeats)]
    decodes = [runtime.decode(prompt, request["new_tokens"]) for _ in range(repeats)]
    bbq = _bbq_latency(runtime, request)
    peak = vm_hwm_bytes()
    for _ in range(repeats - 1):
        runtime.unload()
        gc.collect()
        start = time.perf_counter()
        runtime.load()
        load_s.append(time.perf_counter() - start)
    runtime.unload()
    return {
        "runtime": request["runtime"], "path": request["path"], "n_threads": request["n_threads"],
        "rss_before_load_bytes": rss_before, "peak_rss_bytes": peak, "load_s": load_s, "ttft_s": ttft_s,
        "n_prompt_tokens": len(prompt), "prefill_s": prefill_s, "new_tokens": request["new_tokens"],
        "decode_s": [d for d, _ in decodes], "generated_ids": decodes[0][1], **bbq,
        "llama_extra_buffers": getattr(runtime, "extra_buffers", None),
    }


def _bbq_latency(runtime, request: dict) -> dict:
    """ms per scored prompt: the backend's letter_logprobs over the groups, timed as engine.score times it."""
    groups = _groups(request)
    if not groups:
        return {"bbq_ms_per_prompt": None, "bbq_n_prompts": 0}
    backend = runtime.backend(request["pad_id"])
    try:
        start = time.perf_counter()
        backend.letter_logprobs(groups, request["letter_ids"])
        wall = time.perf_counter() - start
    finally:
        backend.close()
    n = sum(len(g.suffix_ids) for g in groups)
    return {"bbq_ms_per_prompt": 1000 * wall / n, "bbq_n_prompts": n}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m auditor.measure.worker REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    request = json.loads(Path(args[0]).read_text())
    result = measure(request)
    Path(args[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
