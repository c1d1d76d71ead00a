"""Issue 28: peak memory of each study step grows with the bfloat16 weights, not with copies of them.

Two tiny random Llamas that differ only in depth (8 and 24 layers, hidden 512) are
saved as float32 HF directories; every step (load, build magnitude and Wanda,
scoring the dense model and a pruned one, perplexity) runs in a fresh process through `auditor bench memory`'s child
(a study `UnitWorker`), which reads its own peak RSS (VmHWM, reset at the step's
start). Subtracting the two sizes cancels what does not scale with the weights
(Python, torch, the tokenizer), so the bound is on the slope:

    peak(24) - peak(8) <= 1.25 x (W16(24) - W16(8)) + 40 MB

W16 = 2 bytes x parameters. The 40 MB covers allocator and page-cache noise between two
processes; the weights' growth is 100 MB, so one stray float32 copy (+200 MB) fails.
Every step meets it: the builds go block by block into bfloat16 (`BlockWeights`), so
the pruned variant's scoring starts from bfloat16 weights; the dense model's scoring
casts straight from the file; perplexity follows the variant's scoring, as a run
orders them.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import SAMPLE_BBQ

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")

DEPTHS = (8, 24)
CONSTANT_BYTES = 40_000_000
FACTOR = 1.25


def _write_model(folder, depth: int, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_llama_config

    torch.manual_seed(0)
    config = tiny_llama_config(hidden_size=512, intermediate_size=1536, num_hidden_layers=depth,
                               num_attention_heads=8, num_key_value_heads=4)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = folder / f"llama-{depth}"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def peaks(tmp_path_factory, smollm2_tokenizer):
    from auditor.benchmarks.memory import STEPS, StepSettings, measure_step

    folder = tmp_path_factory.mktemp("memory-scaling")
    dirs = {depth: _write_model(folder, depth, smollm2_tokenizer) for depth in DEPTHS}
    # A 64-token perplexity window: its logits (the same at both depths) must not hide what the weights add.
    jobs = [(step, depth) for step in STEPS for depth in DEPTHS]
    settings = {(step, depth): StepSettings(str(dirs[depth]), step, dtype="bfloat16", items=4, bbq=str(SAMPLE_BBQ),
                                            calib_samples=4, calib_seq_len=64, max_length=64, threads=1)
                for step, depth in jobs}
    # Two children at a time: each reads its own VmHWM, so running side by side does not mix their peaks.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(jobs, pool.map(lambda job: measure_step(settings[job], timeout_s=300), jobs)))


@pytest.mark.parametrize("step", ["load", "build-magnitude", "build-wanda", "score-dense", "score", "perplexity"])
def test_peak_grows_at_most_with_the_bf16_weights(peaks, step):
    small, large = peaks[step, DEPTHS[0]], peaks[step, DEPTHS[1]]
    assert small.step_only and large.step_only, "VmHWM could not be reset: the peaks are not the step's own"
    grown = large.peak_rss_bytes - small.peak_rss_bytes
    weights = large.bf16_bytes - small.bf16_bytes
    assert weights > 90_000_000  # the sizes differ by 16 blocks: ~50M parameters
    ratio = (grown - CONSTANT_BYTES) / weights
    detail = (f"{step}: peak grew {grown / 1e6:.0f} MB for {weights / 1e6:.0f} MB more bf16 weights "
              f"(ratio {ratio:.2f} after the {CONSTANT_BYTES / 1e6:.0f} MB constant; bound {FACTOR})")
    assert grown <= FACTOR * weights + CONSTANT_BYTES, detail
