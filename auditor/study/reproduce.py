"""What a run needs to be reproduced: the command, the study file's text and sha256, and the full sha256 of
every model and data file the run read (written into manifest.json by the runner).

An auditor re-runs `command` from `working_dir` (or any folder holding the same study file, whose
embedded text and sha256 are here) with files whose sha256s match `files`; the study hash and the
run's fingerprints then match too, so the item records come out the same. The report's Provenance
section prints all of it (auditor.report.provenance).
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from auditor.core.provenance import file_records, sha256_file
from auditor.data.sources import BBQ_ENV, CORPUS_ENV

# The environment settings that can choose a run's data when the study names none (auditor.data.sources).
DATA_ENV = (BBQ_ENV, CORPUS_ENV)


def reproduce_command(study_file: str, *, trust_remote_code: bool = False,
                      environ: dict[str, str] | None = None) -> str:
    """`auditor run STUDY` as a shell line, with the data-choosing environment variables that were set.

    (`--trust-remote-code` is a command-line switch, not a study key, so it is part of the command.)
    """
    env = os.environ if environ is None else environ
    prefix = [f"{name}={shlex.quote(env[name])}" for name in DATA_ENV if env.get(name)]
    flags = ["--trust-remote-code"] if trust_remote_code else []
    return " ".join([*prefix, "auditor", "run", shlex.quote(study_file), *flags])


def study_file_record(study_file: str) -> dict[str, str | int | None]:
    """{"path", "size_bytes", "sha256", "text"} of the study file as it is now (None values for an in-memory
    study or an unreadable file: the manifest still records the parsed definition)."""
    path = Path(study_file)
    try:
        text = path.read_text(encoding="utf-8")
        return {"path": str(path.resolve()), "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
                "text": text}
    except (OSError, UnicodeDecodeError):
        return {"path": study_file, "size_bytes": None, "sha256": None, "text": None}


def reproduce_record(study_file: str, *, trust_remote_code: bool, model: Path, bbq_files: list[str],
                     calibration_corpus: Path | None, perplexity_corpus: Path | None,
                     chat_template: Path | None) -> dict:
    """The manifest's "reproduce" object: the command, where it was run, the study file, and every input file
    with its full sha256 (grouped by role; a role the run did not use is left out). Without a readable study
    file the command is None and "note" says why."""
    roles: dict[str, list[Path]] = {"model": [model], "bbq": [Path(f) for f in bbq_files]}
    if calibration_corpus is not None:
        roles["calibration_corpus"] = [calibration_corpus]
    if perplexity_corpus is not None:
        roles["perplexity_corpus"] = [perplexity_corpus]
    if chat_template is not None and chat_template.is_file():
        roles["chat_template"] = [chat_template]
    study = study_file_record(study_file)
    out = {
        "command": reproduce_command(study_file, trust_remote_code=trust_remote_code) if study["sha256"] else None,
        "working_dir": os.getcwd(),
        "study_file": study,
        "files": {role: [r for p in paths for r in file_records(p)] for role, paths in roles.items()},
    }
    if out["command"] is None:  # `auditor audit` builds its study in memory from its flags
        out["note"] = (f"no study file to re-run ({study_file}: a study built in memory, as `auditor audit` does); "
                       "manifest.json study.definition holds every setting, to be written as a study file")
    return out
