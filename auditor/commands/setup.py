"""`auditor setup`: install llama.cpp's HF -> GGUF converter from the runtime's own sdist (once per venv)."""
from __future__ import annotations

from pathlib import Path

from auditor.artifacts.llama_converter import default_converter_dir, install_converter


def register(sub) -> None:
    p = sub.add_parser("setup", help="install llama.cpp's GGUF converter (from the llama-cpp-python sdist) "
                                     "into the venv; `make install` runs it")
    p.add_argument("--dir", type=Path, default=None,
                   help="where to put it (default: $AUDITOR_LLAMA_CONVERTER, else <venv>/llama.cpp-converter)")
    p.add_argument("--sdist", type=Path, default=None,
                   help="a downloaded llama-cpp-python sdist (.tar.gz) of the installed version (default: pip download)")
    p.set_defaults(func=run)


def run(args) -> int:
    converter = install_converter(args.dir or default_converter_dir(), sdist=args.sdist)
    print(f"llama.cpp converter: {converter.root} ({converter.describe()})")
    return 0
