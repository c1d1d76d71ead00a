"""Fixtures for study-runner tests: a tiny random Llama saved as an HF directory, and study writers."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SAMPLE_BBQ, make_tiny_llama


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """tests/conftest's tiny Llama (safetensors) with the SmolLM2 tokenizer beside it."""
    out = tmp_path_factory.mktemp("tiny-model") / "tiny"
    make_tiny_llama().save_pretrained(out, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(out)
    return out


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_study(path: Path, top: dict, **tables: dict) -> Path:
    """A study file from plain values: `top` keys first, then one [table] per keyword."""
    lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def small_study(tmp_path, tiny_model_dir):
    """Write a small study on the tiny model (12 fixture items, seeds 0 and 1, no llama.cpp unit)."""
    def make(name: str = "small", *, variants=("magnitude@0.5",), shards: int = 1, null_baselines: bool = False,
             n_items: int = 12, seeds=(0, 1), extra_top: dict | None = None, **tables) -> Path:
        top = {"name": name, "output_dir": str(tmp_path / "reports"), "models": [str(tiny_model_dir)],
               "seeds": list(seeds), "null_baselines": null_baselines, **(extra_top or {})}
        tables.setdefault("data", {"bbq": str(SAMPLE_BBQ), "n_items": n_items})
        tables.setdefault("compression", {"variants": list(variants)})
        tables.setdefault("execution", {"shards": shards, "batch_size": 8})
        return write_study(tmp_path / f"{name}.toml", top, **tables)
    return make
