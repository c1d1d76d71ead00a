"""The report's Provenance section: how to reproduce the run, and the full sha256 of everything it read
and of every artifact it measured.

It only reads what the run recorded: manifest.json's "reproduce" object (auditor.study.reproduce)
and the sha256 column of measurements.json (auditor.measure). Digests are printed whole (64 hex
digits), never shortened: a reviewer compares them with `sha256sum` output.
"""
from __future__ import annotations

from auditor.report.document import Block, Bullets, Heading, Para, Table, provenance_items
from auditor.view.format import NA, is_missing, size_mb
from auditor.view.run import RunView

# The roles of input files, in the order the section lists them, with how each is named there.
ROLES = (("model", "model"), ("bbq", "BBQ data"), ("calibration_corpus", "calibration corpus"),
         ("perplexity_corpus", "perplexity corpus"), ("chat_template", "chat template"))


def provenance_section(view: RunView) -> list[Block]:
    """Heading, reproduce command, the run's settings and versions, the study file, input and artifact digests."""
    manifest = view.manifest
    reproduce = manifest.get("reproduce") if isinstance(manifest.get("reproduce"), dict) else None
    out: list[Block] = [Heading("Provenance", anchor="provenance")]
    if reproduce is None:
        out.append(Para("this run was made before the auditor recorded a reproduce command and file sha256s; "
                        "running its study again records them.", label="Reproduce:", kind="note"))
    else:
        out += _reproduce(reproduce)
    out.append(Bullets(tuple(provenance_items(manifest))))
    if reproduce is not None:
        out += _inputs(reproduce)
    out += _artifacts(view)
    return out


def _reproduce(reproduce: dict) -> list[Block]:
    study = reproduce.get("study_file") or {}
    where = reproduce.get("working_dir") or "the folder it was run from"
    if not reproduce.get("command"):
        return [Para(str(reproduce.get("note") or "no command recorded"), label="Reproduce:", kind="note")]
    out: list[Block] = [
        Para(str(reproduce["command"]), label="Reproduce:", kind="code"),
        Para(f"run from {where} (the study's relative paths start at the study file's folder) with a study file "
             f"whose sha256 is {study.get('sha256') or 'not recorded'} and input files whose sha256s match the "
             "table below; the records come out the same. `auditor gate RUN` verifies the run's own files."),
    ]
    if study.get("text"):
        out += [Heading("Study file", level=3),
                Para(f"{study.get('path', 'unknown')}, {study.get('size_bytes', '?')} bytes, sha256 "
                     f"{study.get('sha256')}:"),
                Para(str(study["text"]).rstrip("\n"), kind="code")]
    return out


def _inputs(reproduce: dict) -> list[Block]:
    files = reproduce.get("files") or {}
    rows = []
    for role, name in ROLES:
        for rec in files.get(role) or []:
            rows.append((name, str(rec.get("path", "?")), _bytes(rec.get("size_bytes")), str(rec.get("sha256", "?"))))
    if not rows:
        return []
    return [Heading("Input files", level=3),
            Para("every file the run read, with its full sha256 (`sha256sum FILE` prints the same)."),
            Table(("role", "file", "size", "sha256"), tuple(rows))]


def _artifacts(view: RunView) -> list[Block]:
    storage = view.storage
    if not len(storage) or "sha256" not in storage.columns:
        return []
    rows = [(str(r["variant"]), str(r["format"]), str(r["layout"]), str(r.get("path", "")),
             size_mb(r["size_bytes"]), "not recorded" if is_missing(r["sha256"]) else str(r["sha256"]))
            for _, r in storage.iterrows()]
    return [Heading("Measured artifacts", level=3),
            Para("the sha256 of each file that `auditor measure` timed and sized, taken before it was deleted; a "
                 "folder's digest is the sha256 of its `sha256sum` listing (sorted relative paths)."),
            Table(("variant", "format", "layout", "file", "size", "sha256"), tuple(rows))]


def _bytes(x) -> str:
    """An exact byte count (what `ls -l` shows), for matching a file by size before hashing it."""
    return NA if is_missing(x) else f"{int(x):,} bytes"
