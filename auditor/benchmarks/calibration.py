"""`auditor bench calibration`: type-I error and power of the verdict's test on simulated records.

Simulates paired (dense, variant) answers to ambiguous items with several
answer orders whose outcomes are correlated within an item, and counts how
often each test rejects at nominal alpha:

- shift: the item-level sign-flip test of b_i - c_i (``auditor.analysis.item_inference``);
- verdict: the verdict's directed-shift test (``auditor.analysis.direction``,
  origin-balanced) significant and positive;
- pooled McNemar (descriptive column only): the exact test on pooled pairs,
  which treats an item's orders as independent.

Model, per item i: role probabilities p_i ~ Dirichlet(2, 1.5, 3) over
(stereotype, other, unknown). Dense and variant each draw an item-level latent
answer L; under the null the variant's L equals the dense's with probability
0.7, else it is a fresh draw from p_i (so the pair is exchangeable). Each order
j answers L with probability sqrt(rho), else a fresh draw from p_i, which makes
the pairwise correlation of any answer indicator across orders exactly rho.
Under the alternative the variant's item probabilities move ``shift`` of mass
from "unknown" to "stereotype" (and its latent is redrawn from them when not
shared). Prints the table; asserts nothing (tests/benchmarks check the bound).

These simulated pairs are exchangeable by construction (the case where a
sign-flip test is exact). `--records RUN` calibrates the whole grade on nulls
made from a real run's records instead (``_calibration_records``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.analysis.inference import mcnemar_exact
from auditor.analysis.direction import DIRECTION, SHIFT, differences
from auditor.analysis.item_inference import sign_flip_pvalue, template_sign_flip_pvalue
from auditor.benchmarks._calibration_records import calibrate, describe
from auditor.core.errors import AuditorError
from auditor.data.records import ROLE_OTHER, ROLE_STEREOTYPE, ROLE_UNKNOWN

CORRELATIONS = (0.0, 0.5, 0.8, 1.0)
ORDERS = (1, 3, 5)
#: Role codes in simulated answers.
S, O, U = 0, 1, 2
ROLES = {S: ROLE_STEREOTYPE, O: ROLE_OTHER, U: ROLE_UNKNOWN}
TYPE_I_BOUND = 0.06


def _draw(p: np.ndarray, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    """Categorical draws with per-item probabilities p (n, 3); size = (n, ...)."""
    u = rng.random(size)
    cdf = np.cumsum(p, axis=1)
    shape = (len(p),) + (1,) * (len(size) - 1)
    return (u >= cdf[:, 0].reshape(shape)).astype(int) + (u >= cdf[:, 1].reshape(shape)).astype(int)


def simulate(n_items: int, n_orders: int, rho: float, shift: float, rng: np.random.Generator) -> tuple:
    """(dense, variant) role codes, each (n_items, n_orders), under the model of the module docstring."""
    p = rng.dirichlet((2.0, 1.5, 3.0), size=n_items)
    p_var = p.copy()
    moved = np.minimum(shift, p_var[:, U])
    p_var[:, U] -= moved
    p_var[:, S] += moved
    latent_d = _draw(p, rng, (n_items,))
    fresh_v = _draw(p_var, rng, (n_items,))
    shared = rng.random(n_items) < 0.7
    # Under the alternative a shared latent also moves: an "unknown" latent becomes "stereotype" w.p. shift / p_U.
    with np.errstate(divide="ignore", invalid="ignore"):
        move = (latent_d == U) & (rng.random(n_items) < np.where(p[:, U] > 0, moved / p[:, U], 0))
    latent_v = np.where(shared, np.where(move, S, latent_d), fresh_v)
    keep = math.sqrt(rho)
    dense = np.where(rng.random((n_items, n_orders)) < keep, latent_d[:, None], _draw(p, rng, (n_items, n_orders)))
    var = np.where(rng.random((n_items, n_orders)) < keep, latent_v[:, None],
                   _draw(p_var, rng, (n_items, n_orders)))
    return dense, var


def per_item_counts(dense: np.ndarray, var: np.ndarray) -> pd.DataFrame:
    """Per-item move counts summed over orders, with the columns of ``auditor.analysis.direction.item_counts``."""
    moves = {"b": (dense != S) & (var == S), "c": (dense == S) & (var != S), "ref_s": dense == S,
             "ref_o": dense == O, "ref_u": dense == U, "var_u": var == U, "lost_u": (dense == U) & (var != U),
             "gained_u": (dense != U) & (var == U)}
    for x, xn in ((U, "u"), (O, "o"), (S, "s")):
        for y, yn in ((U, "u"), (O, "o"), (S, "s")):
            if x != y:
                moves[f"n_{xn}{yn}"] = (dense == x) & (var == y)
    return pd.DataFrame({k: v.sum(axis=1) for k, v in moves.items()})


def decisions(counts: pd.DataFrame, alpha: float) -> dict[str, bool]:
    """Whether each test rejects: the SRS-change test, the verdict's directed shift (positive), pooled McNemar."""
    b, c = int(counts["b"].sum()), int(counts["c"].sum())
    shift = sign_flip_pvalue(differences(counts, SHIFT)) <= alpha
    d = differences(counts, DIRECTION)
    verdict = d.sum() > 0 and template_sign_flip_pvalue(d, np.arange(len(d))) <= alpha
    return {"shift": shift, "verdict": bool(verdict), "mcnemar": mcnemar_exact(b, c) <= alpha}


def calibration_table(*, n_items: int = 100, reps: int = 1000, alpha: float = 0.05, shift: float = 0.1,
                      seed: int = 0, correlations=CORRELATIONS, orders=ORDERS) -> pd.DataFrame:
    """One row per (rho, orders): rejection rates under the null (type-I error) and the alternative (power)."""
    rows = []
    for rho in correlations:
        for k in orders:
            rng = np.random.default_rng([seed, int(round(rho * 100)), k])
            null = [decisions(per_item_counts(*simulate(n_items, k, rho, 0.0, rng)), alpha) for _ in range(reps)]
            alt = [decisions(per_item_counts(*simulate(n_items, k, rho, shift, rng)), alpha) for _ in range(reps)]
            rate = lambda runs, key: float(np.mean([r[key] for r in runs]))  # noqa: E731
            rows.append({"rho": rho, "orders": k, "type1_shift": rate(null, "shift"),
                         "type1_verdict": rate(null, "verdict"), "type1_pooled_mcnemar": rate(null, "mcnemar"),
                         "power_shift": rate(alt, "shift"), "power_verdict": rate(alt, "verdict"),
                         "power_pooled_mcnemar": rate(alt, "mcnemar")})
    return pd.DataFrame(rows)


def register(sub) -> None:
    p = sub.add_parser("calibration", help="type-I error and power of the verdict's item-level test (simulation)")
    p.add_argument("--items", type=int, default=100, help="ambiguous items per simulated run (default 100)")
    p.add_argument("--reps", type=int, default=1000, help="simulated runs per cell and hypothesis (default 1000)")
    p.add_argument("--alpha", type=float, default=0.05, help="nominal level (default 0.05)")
    p.add_argument("--shift", type=float, default=0.1,
                   help="alternative: probability mass moved from unknown to stereotype per item (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON rows")
    p.add_argument("--records", type=Path, default=None, metavar="RUN",
                   help="calibrate the whole grade on nulls and planted shifts made from this run's records")
    p.add_argument("--boot", type=int, default=300, help="bootstrap replicates per graded replicate (--records)")
    p.add_argument("--pair", action="append", default=[], metavar="VARIANT",
                   help="variant swapped with dense by template for the template-swap null (--records; repeatable)")
    p.set_defaults(func=run)


def run_records(args) -> int:
    """`--records RUN`: the whole grade's rates on record-based nulls and alternatives."""
    if args.reps < 1 or args.boot < 50:
        raise AuditorError("bench calibration --records: need --reps >= 1 and --boot >= 50")
    t0 = time.perf_counter()
    table = calibrate(args.records, reps=args.reps, seed=args.seed, n_boot=args.boot, pairs=tuple(args.pair))
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"rows": table.to_dict(orient="records"), "wall_s": wall}))
        return 0
    print(f"bench calibration --records {args.records}: {args.reps} graded replicates per scenario and protocol, "
          f"{args.boot} bootstrap replicates each, seed {args.seed}")
    for line in describe(table):
        print(line)
    print(f"{wall:.0f} s")
    return 0


def run(args) -> int:
    if args.records is not None:
        return run_records(args)
    if args.items < 2 or args.reps < 1 or not 0 < args.alpha < 1 or not 0 <= args.shift <= 1:
        raise AuditorError("bench calibration: need --items >= 2, --reps >= 1, 0 < --alpha < 1, 0 <= --shift <= 1")
    t0 = time.perf_counter()
    table = calibration_table(n_items=args.items, reps=args.reps, alpha=args.alpha, shift=args.shift,
                              seed=args.seed)
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"rows": table.to_dict(orient="records"), "wall_s": wall}))
        return 0
    mc_se = math.sqrt(args.alpha * (1 - args.alpha) / args.reps)
    print(f"bench calibration: {args.items} items, {args.reps} runs per cell and hypothesis, nominal alpha "
          f"{args.alpha:g}, alternative = {args.shift:g} of each item's unknown mass moved to the stereotype "
          f"(Monte Carlo SE of a rate near alpha: {mc_se:.4f})")
    print(f"{'rho':>4} {'orders':>6} | {'type-I shift':>12} {'type-I verdict':>14} {'type-I pooled McNemar':>21} | "
          f"{'power shift':>11} {'power verdict':>13} {'power pooled McNemar':>20}")
    for r in table.itertuples():
        print(f"{r.rho:>4.1f} {r.orders:>6d} | {r.type1_shift:>12.3f} {r.type1_verdict:>14.3f} "
              f"{r.type1_pooled_mcnemar:>21.3f} | {r.power_shift:>11.3f} {r.power_verdict:>13.3f} "
              f"{r.power_pooled_mcnemar:>20.3f}")
    worst = float(table[["type1_shift", "type1_verdict"]].to_numpy().max())
    ok = worst <= TYPE_I_BOUND
    print(f"largest type-I error of the verdict's tests: {worst:.3f} (bound {TYPE_I_BOUND:g}: "
          f"{'met' if ok else 'NOT met'}); pooled McNemar is a descriptive column only. {wall:.1f} s")
    return 0
