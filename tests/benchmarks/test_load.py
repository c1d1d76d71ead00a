"""The busy-machine warning the timing benchmarks print."""
from auditor.benchmarks import _load


def test_warns_only_when_a_sampled_load_exceeds_the_cores(monkeypatch, capsys):
    monkeypatch.setattr(_load.os, "cpu_count", lambda: 2)
    _load.warn_if_busy(0.5, 1.9, 2.0)
    assert capsys.readouterr().out == ""
    _load.warn_if_busy(0.5, 2.1)
    assert "machine was busy" in capsys.readouterr().out
