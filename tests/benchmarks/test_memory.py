"""`auditor bench memory`: the fit, the bound and the refusals (the steps themselves: tests/study/test_memory_scaling)."""
from __future__ import annotations

import pytest

from auditor.benchmarks.memory import StepPeak, fit_bytes_per_param
from auditor.cli import main
from auditor.core.rss import reset_peak, vm_hwm_bytes, vm_rss_bytes


def _peak(n_params: int, peak: int, step: str = "load") -> StepPeak:
    return StepPeak(f"m{n_params}", step, peak, 0, n_params, True, 1.0)


def test_fit_recovers_constant_and_bytes_per_parameter():
    peaks = [_peak(n, 700_000_000 + 6 * n) for n in (10**8, 3 * 10**8, 10**9)]
    constant, slope = fit_bytes_per_param(peaks)
    assert constant == pytest.approx(7e8) and slope == pytest.approx(6.0)
    assert fit_bytes_per_param(peaks[:1]) is None  # one size: no slope


def test_bound_is_issue_28s():
    p = _peak(10**9, 0)
    assert p.bf16_bytes == 2 * 10**9
    assert p.bound_bytes == int(1.25 * 2e9 + 1.5e9)


def test_peak_readers_and_reset():
    before = vm_hwm_bytes()
    assert before >= vm_rss_bytes() > 0
    if reset_peak():
        assert vm_hwm_bytes() <= before


@pytest.mark.parametrize("argv,message", [
    (["--steps", "load,unpack"], "unknown step"),
    (["--items", "0"], "--items"),
])
def test_bad_options_are_refused(capsys, argv, message):
    assert main(["bench", "memory", *argv]) != 0
    assert message in capsys.readouterr().err
