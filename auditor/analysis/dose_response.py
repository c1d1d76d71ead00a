"""Dose-response: how a risk figure grows with a method's level (sparsity, bits), with clustered errors."""
from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from auditor.analysis.baselines import (
    BASELINE_VARIANTS,
    REFERENCE_BACKEND,
)
from auditor.analysis.comparison import AMBIG
from auditor.analysis.item_inference import templates
from auditor.analysis.metrics import NAN
from auditor.core.errors import SpecError
from auditor.core.names import DENSE, split_mask_seed
from auditor.data.records import ROLE_STEREOTYPE
from compressors.registry import REGISTRY, parse_one

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecLevel:
    """Method key, family and numeric level of the first step of a variant spec; n_steps of the chain.

    The method key carries structure, so levels of different structures are never
    pooled on one axis: "wanda" (unstructured) vs "wanda:2:4" (N:M), "rtn"
    (group 128, the default) vs "rtn:g64".
    """

    method: str
    family: str
    level: float | None
    n_steps: int


def spec_level(spec: str) -> SpecLevel:
    """Parse "wanda@0.5" / "rtn@4:g64" / "dense" with the registry's own level parsers.

    Uses ``compressors.registry.REGISTRY`` entries (the parsers ``parse_chain``
    uses) without instantiating compressors, so no torch or runtime module is
    imported. "dense" is method "dense", family "none", level 0. Unknown methods
    raise SpecError (with the registry's message). A mask seed ("random@0.5#seed1") is ignored.
    """
    text = split_mask_seed(spec)[0].strip()
    if text in ("", DENSE):
        return SpecLevel(DENSE, "none", 0.0, 0)
    steps = text.split("+")
    first = steps[0].strip()
    name, at, level_text = first.partition("@")
    entry = REGISTRY.get(name)
    if entry is None:
        parse_one(first)  # raises the registry's SpecError with its "did you mean" hint
        raise SpecError(f"unknown compressor {name!r} in {spec!r}")  # not reached: parse_one raised
    level, params = entry.parse_level(level_text if at else None, first)
    return SpecLevel(method_key(name, params), entry.family, level, len(steps))


#: The group size rtn uses when a spec names none (compressors.registry._bits_and_group).
DEFAULT_GROUP_SIZE = 128


def method_key(name: str, params: dict) -> str:
    """name, plus ":N:M" for an N:M pattern and ":gG" for a non-default group size."""
    key = name
    if "n" in params and "m" in params:
        key += f":{params['n']}:{params['m']}"
    if params.get("group_size", DEFAULT_GROUP_SIZE) != DEFAULT_GROUP_SIZE:
        key += f":g{params['group_size']}"
    return key


@dataclass(frozen=True)
class DoseResponse:
    """Logistic fit logit P(biased) = intercept + slope * level for one method, clustered by item."""

    method: str
    backend: str
    levels: tuple[float, ...]
    n_obs: int
    n_items: int
    intercept: float
    slope: float
    slope_se: float
    slope_se_naive: float
    slope_ci_low: float
    slope_ci_high: float
    p_value: float
    note: str = ""

    def as_row(self) -> dict:
        row = asdict(self)
        row["levels"] = ",".join(f"{x:g}" for x in self.levels)
        return row


def _level_frame(records: pd.DataFrame, method: str, reference: str) -> tuple[pd.DataFrame, str]:
    """Rows of the method's single-step variants (+ the reference at level 0 for pruning), with a level column."""
    levels: dict[str, float] = {}
    family = ""
    for variant in records["variant"].unique():
        if variant == reference or variant in BASELINE_VARIANTS:
            continue
        try:
            parsed = spec_level(str(variant))
        except SpecError:
            continue  # not a registry spec (e.g. a named export): not part of any method's dose-response
        if parsed.method == method and parsed.n_steps == 1 and parsed.level is not None:
            levels[str(variant)] = float(parsed.level)
            family = parsed.family
    if family == "prune":
        levels[reference] = 0.0  # sparsity 0 is the dense model itself
    frame = records[records["variant"].isin(list(levels))]
    return frame.assign(level=frame["variant"].map(levels).astype(float)), family


def dose_response(
    records: pd.DataFrame,
    method: str,
    *,
    backend: str = REFERENCE_BACKEND,
    reference: str = DENSE,
    condition: str = AMBIG,
) -> DoseResponse:
    """Logistic regression of P(biased) on compression level for one method, item-clustered SEs.

    Observations are the (variant, seed, item) rows of the method's single-step
    variants on ``backend`` (chains such as wanda@0.5+gguf-q4_k_m are left out:
    their quantization step confounds the level), ``condition`` items only; y = 1
    when the answer is stereotype-consistent. Pruning methods include the
    reference at level 0 (sparsity); methods with other levels (rtn: bits) use
    their variants' levels only. The model logit P(y=1) = a + b * level is fit by
    statsmodels GLM (Binomial, logit link); slope_se is the cluster-robust SE with
    the BBQ template (category + question_index, ``item_inference.templates``) as
    the cluster: every seed and level of an item, and every item written from
    one template, share a cluster (Cameron and Miller 2015); n_items counts
    items, the clusters are templates. slope_se_naive is the model-based SE; the CI and
    p-value are Wald with the clustered SE. NaN fields with a note when there are
    fewer than two levels, no variation in y, or the fit fails.
    """
    sel = records[(records["backend"] == backend) & (records["condition"] == condition)]
    frame, _ = _level_frame(sel, method, reference)
    levels = tuple(sorted(float(x) for x in frame["level"].unique())) if len(frame) else ()
    y = (frame["role"] == ROLE_STEREOTYPE).to_numpy(dtype=float)
    n_items = int(frame["item_id"].nunique()) if len(frame) else 0

    def empty(note: str) -> DoseResponse:
        log.info("dose-response %s on %s: %s", method, backend, note)
        return DoseResponse(method, backend, levels, len(frame), n_items, NAN, NAN, NAN, NAN, NAN, NAN, NAN, note)

    if len(levels) < 2:
        return empty(f"fewer than two levels on {backend!r} ({', '.join(f'{x:g}' for x in levels) or 'none'})")
    if y.min() == y.max():
        return empty("no variation in the outcome (all biased or all unbiased)")
    import statsmodels.api as sm
    from scipy.stats import norm

    x = sm.add_constant(frame["level"].to_numpy(dtype=float))
    groups = pd.factorize(templates(frame))[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sm.GLM(y, x, family=sm.families.Binomial())
            clustered = model.fit(cov_type="cluster", cov_kwds={"groups": groups})
            naive = model.fit()
    except (ValueError, np.linalg.LinAlgError) as exc:
        return empty(f"fit failed: {exc}")
    intercept, slope = (float(v) for v in clustered.params)
    se = float(clustered.bse[1])
    z = float(norm.ppf(0.975))
    return DoseResponse(method, backend, levels, len(frame), n_items, intercept, slope, se, float(naive.bse[1]),
                        slope - z * se, slope + z * se, float(clustered.pvalues[1]))


def dose_response_table(records: pd.DataFrame, *, backend: str = REFERENCE_BACKEND,
                        reference: str = DENSE) -> pd.DataFrame:
    """dose_response for every method with at least one numeric-level single-step variant on the backend."""
    methods = set()
    for variant in records.loc[records["backend"] == backend, "variant"].unique():
        try:
            parsed = spec_level(str(variant))
        except SpecError:
            continue
        if parsed.n_steps == 1 and parsed.level is not None and parsed.method != DENSE:
            methods.add(parsed.method)
    rows = [dose_response(records, m, backend=backend, reference=reference).as_row() for m in sorted(methods)]
    columns = list(DoseResponse.__dataclass_fields__)
    return pd.DataFrame(rows, columns=columns)


# --- the paradox table --------------------------------------------------------------------------------
