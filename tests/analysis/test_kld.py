"""Full-vocabulary KLD: auditor.analysis.kld against an independent port of llama-perplexity's maths
(tests/analysis/kld_reference.py), on hand-made rows, a tiny random torch model and a tiny model's Q8_0 GGUF
against its F16 in llama.cpp; the real Qwen GGUF in a slow test."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from auditor.analysis import kld as K
from auditor.scoring.perplexity import perplexity, scored_positions, sliding_windows
from tests.analysis import kld_reference as R
from tests.conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
QWEN_GGUF = ROOT / "docs" / "findings" / "models" / "qwen2.5-coder-1.5b-instruct.gguf"
# Figures the acceptance compares within 1% (relative); same-top share exactly up to one position.
COMPARED = ("kld_mean", "kld_max", "delta_p_rms", "ppl", "ppl_base")
# Percentiles too, within 1% or 1e-6 nats: a position whose KLD is ~1e-5 is at the level where the two
# roundings to uint16 (from log-probs here, from logits in llama.cpp) differ by a step in a few entries.
PERCENTILES = ("kld_median", "kld_p90", "kld_p99")


def _log_softmax32(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))).astype(np.float32)


def _agree(got: dict, want: dict, n: int) -> None:
    for key in COMPARED:
        assert got[key] == pytest.approx(want[key], rel=0.01, abs=1e-7), key
    for key in PERCENTILES:
        assert got[key] == pytest.approx(want[key], rel=0.01, abs=1e-6), key
    assert abs(got["same_top"] - want["same_top"]) <= 1 / n + 1e-12
    assert got["n_positions"] == n


# --- the maths on hand-made rows ------------------------------------------------------------------------------


def test_rows_follow_llama_perplexitys_layout_and_round_trip():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(5, 1001)).astype(np.float32)  # odd vocabulary: rows padded to even
    rows = K.quantize_rows(_log_softmax32(logits))
    assert rows.shape == (5, K.row_width(1001)) == (5, 1006) and rows.dtype == np.uint16
    assert K.bytes_per_position(1001) == 2 * 1006
    for r in range(5):
        scale, floor, q = R.base_row(logits[r])
        header = rows[r, :4].copy().view("<f4")
        assert header[0] == pytest.approx(scale, rel=1e-5) and header[1] == pytest.approx(floor, abs=1e-4)
        assert np.abs(rows[r, 4:4 + 1001].astype(int) - q.astype(int)).max() <= 1  # float rounding of the shift
    back = K.dequantize_rows(rows, 1001)
    exact = _log_softmax32(logits)
    near = exact > exact.max(axis=1, keepdims=True) - 16
    assert np.abs(back - exact)[near].max() <= 16 / 65535  # half a step of the 16-nat range, plus rounding


def test_figures_equal_the_reference_on_random_rows():
    rng = np.random.default_rng(1)
    n, vocab = 150, 700
    base_logits = rng.normal(0, 3, size=(n, vocab)).astype(np.float32)
    new_logits = (base_logits + rng.normal(0, 0.5, size=(n, vocab))).astype(np.float32)
    tokens = rng.integers(0, vocab, n)
    figs = K.position_figures(K.quantize_rows(_log_softmax32(base_logits)), _log_softmax32(new_logits), tokens)
    ref = [R.position(new_logits[i], R.base_row(base_logits[i]), int(tokens[i])) for i in range(n)]
    np.testing.assert_allclose(figs.kld, [r["kld"] for r in ref], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(figs.delta_p, [r["delta_p"] for r in ref], atol=1e-5)
    got, want = K.kld_summary(figs), R.statistics(ref)
    _agree(got, want, n)
    for key in ("kld_se", "same_top_se", "delta_p_mean", "ln_ppl_ratio", "ln_ppl_ratio_se", "kld_p99", "kld_min"):
        assert got[key] == pytest.approx(want[key], rel=0.01, abs=1e-6), key


def test_a_model_against_its_own_base_is_zero_up_to_the_uint16_step():
    rng = np.random.default_rng(2)
    logp = _log_softmax32(rng.normal(0, 5, size=(40, 300)).astype(np.float32))
    # Scored tokens within 16 nats of the top: the base stores every token below that as its floor.
    s = K.kld_summary(K.position_figures(K.quantize_rows(logp), logp, np.argsort(logp, axis=1)[:, -3]))
    # Each stored log-prob is within half a step (16 / 65535 / 2 nats) of the exact one, so |KLD| is too.
    assert abs(s["kld_mean"]) <= 16 / 65535 and abs(s["kld_max"]) <= 16 / 65535
    assert s["same_top"] == 1.0 and abs(s["ln_ppl_ratio"]) < 1e-3 and s["delta_p_rms"] < 1e-3


def test_empty_and_few_positions_give_nan_not_zero():
    s = K.kld_summary(K.PositionFigures.concat([]))
    assert s["n_positions"] == 0 and math.isnan(s["kld_mean"]) and math.isnan(s["same_top"])
    logp = _log_softmax32(np.random.default_rng(3).normal(size=(5, 50)).astype(np.float32))
    few = K.kld_summary(K.position_figures(K.quantize_rows(logp), logp, np.arange(5)))
    assert few["n_positions"] == 5 and math.isnan(few["kld_se"])  # llama.cpp prints 0 below 11 positions


def test_positions_are_evenly_spaced_and_bounded():
    scored = np.arange(10, 110)
    assert K.kld_positions(scored, 0).size == 0
    assert np.array_equal(K.kld_positions(scored, 500), scored)
    picked = K.kld_positions(scored, 5)
    assert picked.tolist() == [10, 35, 60, 84, 109]


def test_base_file_round_trips_and_refuses_other_files(tmp_path):
    rows = K.quantize_rows(_log_softmax32(np.random.default_rng(4).normal(size=(3, 11)).astype(np.float32)))
    base = K.KldBase(np.array([4, 8, 9]), np.array([1, 2, 3]), rows, 11)
    K.save_base(base, tmp_path / "b.npz")
    back = K.load_base(tmp_path / "b.npz")
    assert back.n_vocab == 11 and np.array_equal(back.rows, rows) and np.array_equal(back.positions, [4, 8, 9])
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a KLD base file"):
        K.load_base(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="positions"):
        K.KldBase(np.array([1]), np.array([1, 2]), rows[:1], 11)


# --- through perplexity: a tiny random torch model ---------------------------------------------------------------


def _peaked(seed: int, noise: float = 0.0):
    """A tiny random Llama with a sharp output distribution (the final norm scaled up), optionally perturbed."""
    import torch

    model = make_tiny_llama(seed=seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(40.0)
        if noise:
            g = torch.Generator().manual_seed(7)
            for p in model.model.layers.parameters():
                p.add_(noise * p.abs().mean() * torch.randn(p.shape, generator=g))
    return model


def _reference_figures(base_logits: dict[int, np.ndarray], new_logits: dict[int, np.ndarray],
                       ids: list[int]) -> dict[str, float]:
    rows = [R.position(new_logits[p], R.base_row(base_logits[p]), ids[p]) for p in sorted(base_logits)]
    return R.statistics(rows)


def _torch_logits_at(model, ids: list[int], positions: np.ndarray, max_length: int, stride: int) -> dict[int, np.ndarray]:
    """Raw float32 logits predicting each position, from the window that scores it (one full forward per window)."""
    import torch

    out = {}
    for w in sliding_windows(len(ids), max_length, stride):
        here = [int(p) for p in positions if w.first_scored <= p < w.end]
        if not here:
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[w.begin:w.end]])).logits[0].float().numpy()
        for p in here:
            out[p] = logits[p - w.begin - 1]
    return out


def test_tiny_torch_model_matches_the_independent_implementation():
    from auditor.scoring.backends.torch_backend import TorchBackend

    ids = [int(t) for t in np.random.default_rng(5).integers(3, 49152, 300)]
    max_length, stride = 64, 32
    at = K.kld_positions(scored_positions(len(ids), max_length, stride), 120)
    dense, variant = _peaked(3), _peaked(3, noise=0.3)
    collector = K.BaseCollector()
    perplexity(TorchBackend(dense), ids, max_length, stride, rows_at=at, on_rows=collector)
    base = collector.base()
    assert np.array_equal(base.positions, at) and base.n_vocab == 49152
    compared = K.Comparison(base)
    res = perplexity(TorchBackend(variant), ids, max_length, stride, rows_at=at, on_rows=compared)
    got = compared.summary()
    want = _reference_figures(_torch_logits_at(dense, ids, at, max_length, stride),
                              _torch_logits_at(variant, ids, at, max_length, stride), ids)
    _agree(got, want, len(at))
    assert got["kld_mean"] > 1e-3 and got["same_top"] < 1.0  # the perturbation moved the distribution
    assert res.n_tokens == len(scored_positions(len(ids), max_length, stride))

    itself = K.Comparison(base)
    perplexity(TorchBackend(dense), ids, max_length, stride, rows_at=at, on_rows=itself, chunked_head=False)
    same = itself.summary()
    assert abs(same["kld_mean"]) <= 16 / 65535 and same["same_top"] == 1.0


def test_misaligned_rows_are_refused_not_compared():
    logp = _log_softmax32(np.random.default_rng(6).normal(size=(2, 30)).astype(np.float32))
    base = K.KldBase(np.array([3, 7]), np.array([1, 2]), K.quantize_rows(logp), 30)
    other_tokens = K.Comparison(base)
    other_tokens(np.array([3, 7]), np.array([1, 5]), logp)
    assert "other token ids" in other_tokens.summary()["problem"]
    other_vocab = K.Comparison(base)
    other_vocab(np.array([3, 7]), np.array([1, 2]), logp[:, :20])
    assert "vocabulary" in other_vocab.summary()["problem"]
    partial = K.Comparison(base)
    partial(np.array([3]), np.array([1]), logp[:1])
    assert "1 of the base's 2 positions" in partial.summary()["problem"]


# --- llama.cpp: a Q8_0 GGUF against its F16 -------------------------------------------------------------------


def _llama_logits_at(path: Path, ids: list[int], positions: np.ndarray, max_length: int, stride: int,
                     bos: int | None = None) -> dict[int, np.ndarray]:
    """Raw logits from llama-cpp-python's own Llama (logits_all), not the auditor's backend, per scoring window
    (opened by open_llama only for its AMX check: an unpatched build's AMX kernels die, llama_amx)."""
    from auditor.scoring.backends.llama_backend import open_llama

    head = [] if bos is None else [bos]
    llm = open_llama(path, n_ctx=max_length, logits_all=True, n_threads=1, verbose=False)
    out = {}
    try:
        for w in sliding_windows(len(ids), max_length, stride, bos=bos is not None):
            here = [int(p) for p in positions if w.first_scored <= p < w.end]
            if not here:
                continue
            llm.reset()
            window = head + ids[w.begin:w.end]
            llm.eval(window)
            scores = np.asarray(llm.scores[:len(window)], dtype=np.float32)
            for p in here:
                out[p] = scores[p - w.begin + len(head) - 1].copy()
    finally:
        llm.close()
    return out


def _gguf_kld(base_path: Path, new_path: Path, ids: list[int], max_length: int, stride: int, n: int,
              bos: int | None = None) -> tuple[dict, dict]:
    """(auditor's figures through LlamaCppBackend, the reference's from llama-cpp-python's raw logits)."""
    from auditor.scoring.backends.llama_backend import LlamaCppBackend

    at = K.kld_positions(scored_positions(len(ids), max_length, stride, bos=bos is not None), n)
    collector = K.BaseCollector()
    b = LlamaCppBackend(base_path, n_ctx=max_length, n_threads=1)
    try:
        perplexity(b, ids, max_length, stride, bos_id=bos, rows_at=at, on_rows=collector)
    finally:
        b.close()
    compared = K.Comparison(collector.base())
    q = LlamaCppBackend(new_path, n_ctx=max_length, n_threads=1)
    try:
        perplexity(q, ids, max_length, stride, bos_id=bos, rows_at=at, on_rows=compared)
    finally:
        q.close()
    want = _reference_figures(_llama_logits_at(base_path, ids, at, max_length, stride, bos),
                              _llama_logits_at(new_path, ids, at, max_length, stride, bos), ids)
    return compared.summary(), want


def test_tiny_q8_0_gguf_against_its_f16_matches_the_independent_implementation(tmp_path, smollm2_tokenizer):
    from auditor.artifacts.gguf_writer import write_gguf
    from compressors.gguf_quant import quantize_gguf

    f16 = write_gguf(_peaked(3), tmp_path / "tiny-f16.gguf", tokenizer=smollm2_tokenizer, outtype="f16").path
    q8 = tmp_path / "tiny-q8_0.gguf"
    quantize_gguf(f16, q8, "Q8_0", n_threads=1)
    ids = [int(t) for t in np.random.default_rng(8).integers(3, 49152, 300)]
    got, want = _gguf_kld(f16, q8, ids, 64, 32, 150)
    assert "problem" not in got
    _agree(got, want, 150)
    assert got["kld_mean"] > 0  # Q8_0 moved the distribution, if only a little


@pytest.mark.slow
@pytest.mark.skipif(not QWEN_GGUF.is_file(), reason=f"{QWEN_GGUF.name} not present (docs/findings/get_models.py)")
def test_real_qwen_q8_0_against_its_f16_matches_the_independent_implementation(tmp_path):
    """The committed Qwen GGUF (Q4_K_M, which llama.cpp will not requantize) made dense as a study makes it
    (float32 weights), exported to F16 and quantized to Q8_0 as gguf-q8_0 is; 320 corpus tokens, 200 compared."""
    from auditor.artifacts.gguf_writer import write_gguf
    from auditor.artifacts.models import float32_weights_dir, load_model, load_tokenizer, resolve_model
    from compressors.gguf_quant import quantize_gguf

    source = resolve_model(str(QWEN_GGUF))
    weights = float32_weights_dir(source, tmp_path / "f32")
    tokenizer = load_tokenizer(source)
    model = load_model(source, weights=weights)
    f16 = write_gguf(model, tmp_path / "qwen-f16.gguf", tokenizer=tokenizer, outtype="f16").path
    del model
    q8 = tmp_path / "qwen-q8_0.gguf"
    quantize_gguf(f16, q8, "Q8_0", n_threads=2)
    text = (ROOT / "fixtures" / "corpus_test.txt").read_text(encoding="utf-8")
    ids = [int(t) for t in tokenizer.encode(text, add_special_tokens=False)[:320]]
    got, want = _gguf_kld(f16, q8, ids, 128, 64, 200)
    assert "problem" not in got
    _agree(got, want, 200)
    assert 0 < got["kld_mean"] < 0.05 and got["same_top"] > 0.8  # Q8_0 of a 1.5B model: close to its F16
