"""An independent port of llama-perplexity's --kl-divergence maths (ggml-org/llama.cpp tools/perplexity/perplexity.cpp),
written position by position from the raw logits, as the C++ does: the uint16 base row of `log_softmax(n_vocab,
logits, uint16_t *, tok)`, the per-position KLD of `log_softmax(n_vocab, logits, base_log_prob, tok, kld)`, and the
statistics `kl_divergence` prints. Used only by tests, to check auditor.analysis.kld."""
from __future__ import annotations

import math

import numpy as np

F = np.float32


def nearest_int(x: np.float32) -> int:
    """The C++ nearest_int: round to nearest, ties to even (the 1.5 x 2^23 trick)."""
    return int(np.rint(F(x)))


def base_row(logits: np.ndarray) -> tuple[np.float32, np.float32, np.ndarray]:
    """(scale, min_log_prob, uint16 values) of one position, from its float32 logits."""
    x = logits.astype(F)
    max_logit, min_logit = F(x.max()), F(x.min())
    min_logit = max(min_logit, F(max_logit - F(16)))
    sum_exp = float(np.sum(np.exp((x - max_logit).astype(F)), dtype=np.float64))
    log_sum_exp = F(math.log(sum_exp))
    min_log_prob = F(F(min_logit - max_logit) - log_sum_exp)
    scale = F(F(max_logit - min_logit) / F(65535))
    q = np.zeros(len(x), dtype=np.uint16)
    if scale:
        inv = F(F(1) / scale)
        for i in np.nonzero(x > min_logit)[0]:
            q[i] = nearest_int(F(inv * F(x[i] - min_logit)))
    return scale, min_log_prob, q


def position(logits: np.ndarray, base: tuple[np.float32, np.float32, np.ndarray], tok: int) -> dict[str, float]:
    """KLD, delta_p, same top, nll and nll_base of one position of the new model against a base row."""
    x = logits.astype(F)
    imax = int(np.argmax(x))
    max_logit = F(x[imax])
    log_sum_exp = F(math.log(float(np.sum(np.exp((x - max_logit).astype(F)), dtype=np.float64))))
    scale, min_log_prob, q = base
    nll = F(F(max_logit + log_sum_exp) - x[tok])
    nll_base = -F(F(scale * F(q[tok])) + min_log_prob)
    shift = F(max_logit + log_sum_exp)
    p_log_base = (scale * q.astype(F) + min_log_prob).astype(F)
    imax_base = int(np.argmax(p_log_base))
    keep = p_log_base > F(-16)
    kld = float(np.sum((np.exp(p_log_base[keep]) * (p_log_base[keep] - x[keep] + shift)).astype(F), dtype=np.float64))
    p_diff = float(F(np.exp(F(-nll))) - F(np.exp(F(-nll_base))))
    return {"kld": kld, "delta_p": p_diff, "same_top": imax == imax_base, "nll": float(nll), "nll_base": float(nll_base)}


def _mean_unc(s: float, s2: float, n: int) -> tuple[float, float]:
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def _percentile(values: list[float], fraction: float) -> float:
    values = sorted(values)
    if fraction <= 0:
        return values[0]
    if fraction >= 1:
        return values[-1]
    p = fraction * (len(values) - 1)
    ip = int(p)
    p -= ip
    return (1 - p) * values[ip] + p * values[min(ip + 1, len(values) - 1)]


def statistics(rows: list[dict[str, float]]) -> dict[str, float]:
    """The figures llama-perplexity prints after --kl-divergence, from its running sums."""
    n = len(rows)
    kld = [r["kld"] for r in rows]
    dp = [r["delta_p"] for r in rows]
    nll = [r["nll"] for r in rows]
    nb = [r["nll_base"] for r in rows]
    out = {}
    out["kld_mean"], out["kld_se"] = _mean_unc(sum(kld), sum(k * k for k in kld), n)
    for name, frac in (("max", 1), ("p99_9", 0.999), ("p99", 0.99), ("p95", 0.95), ("p90", 0.9), ("p10", 0.1),
                       ("p5", 0.05), ("p1", 0.01), ("p0_1", 0.001), ("min", 0)):
        out[f"kld_{name}"] = _percentile(kld, frac)
    s = sorted(kld)
    out["kld_median"] = 0.5 * (s[n // 2] + s[n // 2 - 1]) if n % 2 == 0 else s[n // 2]
    top = sum(r["same_top"] for r in rows) / n
    out["same_top"], out["same_top_se"] = top, math.sqrt(top * (1 - top) / (n - 1))
    out["delta_p_mean"], out["delta_p_se"] = _mean_unc(sum(dp), sum(d * d for d in dp), n)
    for name, frac in (("max", 1), ("p99", 0.99), ("p90", 0.9), ("p75", 0.75), ("p25", 0.25), ("p10", 0.1),
                       ("p1", 0.01), ("min", 0)):
        out[f"delta_p_{name}"] = _percentile(dp, frac)
    mse, mse_unc = _mean_unc(sum(d * d for d in dp), sum(d ** 4 for d in dp), n)
    out["delta_p_rms"] = math.sqrt(mse)
    out["delta_p_rms_se"] = 0.5 / out["delta_p_rms"] * mse_unc if out["delta_p_rms"] else float("nan")
    lp, lp_unc = _mean_unc(sum(nll), sum(v * v for v in nll), n)
    lb, lb_unc = _mean_unc(sum(nb), sum(v * v for v in nb), n)
    cov = (sum(a * b for a, b in zip(nll, nb)) / n - lp * lb) / (n - 1) if n >= 10 else 0.0
    out["ln_ppl_ratio"] = lp - lb
    out["ln_ppl_ratio_se"] = math.sqrt(lp_unc ** 2 + lb_unc ** 2 - 2 * cov)
    out["ppl"], out["ppl_base"] = math.exp(lp), math.exp(lb)
    return out
