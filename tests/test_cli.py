"""The command line as users expect it: --version, `python -m auditor`, and no third-party progress bars."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from auditor import __version__, cli
from tests.conftest import ROOT

BARS = ("Converting and de-quantizing GGUF tensors", "Loading weights", "Writing model shards")
#: Draws the three bars the way transformers does: tqdm.auto directly (GGUF) and transformers' own tqdm.
DRAW = ("from tqdm.auto import tqdm; from transformers.utils import logging; "
        f"list(tqdm(range(3), desc={BARS[0]!r})); list(logging.tqdm(range(3), desc={BARS[1]!r})); "
        f"list(logging.tqdm(range(3), desc={BARS[2]!r}))")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in cli.QUIET_ENV}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"auditor {__version__}"


def test_python_dash_m_auditor():
    done = subprocess.run([sys.executable, "-m", "auditor", "--version"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == f"auditor {__version__}"
    done = subprocess.run([sys.executable, "-m", "auditor", "data", "fetch", "nope"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr


def test_third_party_progress_bars_are_silenced():
    loud = _python(DRAW)
    assert loud.returncode == 0 and all(bar in loud.stderr for bar in BARS)  # the bars exist without the switch
    quiet = _python("from auditor.cli import quiet_third_party; quiet_third_party(); " + DRAW)
    assert quiet.returncode == 0, quiet.stderr
    assert not any(bar in quiet.stderr for bar in BARS), quiet.stderr
    # a library imported before the switch is silenced too
    late = _python("import transformers.utils.logging; from auditor.cli import quiet_third_party; "
                   "quiet_third_party(); " + DRAW)
    assert not any(bar in late.stderr for bar in BARS[1:]), late.stderr


def test_every_command_runs_quietly(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "quiet_third_party", lambda: calls.append(True))
    with pytest.raises(SystemExit):
        cli.main(["data", "fetch"])  # argparse error: the switch comes after parsing, never needed for it
    assert cli.main(["bench", "sparse-kernels", "--sparsities", "1.5"]) == 2
    assert calls == [True]
