"""llama.cpp's own HF -> GGUF converter, taken from the llama-cpp-python sdist the runtime is built from.

`install_converter` (run by `auditor setup`, which `make install` calls) downloads
the source distribution of the installed llama-cpp-python version with pip and
extracts `vendor/llama.cpp/{convert_hf_to_gguf.py, conversion/, gguf-py/, LICENSE}`
into a git-ignored folder (default `<venv>/llama.cpp-converter`, or
`$AUDITOR_LLAMA_CONVERTER`). Nothing of it is committed to this project.

`convert_hf_dir` runs that converter in a subprocess whose PYTHONPATH starts with
its own `gguf-py`, so the converter always uses the gguf-py of its own commit and
never the `gguf` package installed here (and vice versa). The subprocess runs
offline (HF_HUB_OFFLINE=1).

`converter_architectures` reads the converter's table of HF architectures
(`conversion/__init__.py: TEXT_MODEL_MAP`) without importing it, so a model whose
architecture nothing can convert is refused before it is loaded.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from auditor.core.errors import ModelError
from auditor.core.files import atomic_path, write_json

log = logging.getLogger(__name__)

ENV_DIR = "AUDITOR_LLAMA_CONVERTER"
RUNTIME_PACKAGE = "llama-cpp-python"
#: what is taken from the sdist's vendor/llama.cpp/ (files and folders)
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
MANIFEST = "converter.json"
DEFAULT_TIMEOUT_S = 3600


def default_converter_dir() -> Path:
    """`$AUDITOR_LLAMA_CONVERTER`, else `<sys.prefix>/llama.cpp-converter` (inside the venv)."""
    explicit = os.environ.get(ENV_DIR)
    return Path(explicit) if explicit else Path(sys.prefix) / "llama.cpp-converter"


def runtime_version() -> str:
    try:
        return metadata.version(RUNTIME_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(f"{RUNTIME_PACKAGE} is not installed; it is the GGUF runtime and its converter's source") from None


@dataclass(frozen=True)
class Converter:
    """An installed converter folder and the runtime release it came from."""

    root: Path
    version: str  # llama-cpp-python version of the sdist
    sdist_sha256: str

    @property
    def script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    def describe(self) -> str:
        return f"llama.cpp convert_hf_to_gguf.py from {RUNTIME_PACKAGE} {self.version} sdist (sha256 {self.sdist_sha256[:12]})"


def find_converter(root: Path | None = None) -> Converter:
    """The installed converter; a ModelError saying how to install it when absent or from another version."""
    root = Path(root) if root is not None else default_converter_dir()
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise ModelError(f"{root}: llama.cpp's GGUF converter is not installed; run `auditor setup` "
                         f"(or `make install`) once, or set {ENV_DIR}")
    info = json.loads(manifest.read_text())
    installed = runtime_version()
    if info["version"] != installed:
        raise ModelError(f"{root}: converter from {RUNTIME_PACKAGE} {info['version']} but the runtime is "
                         f"{installed}; run `auditor setup` again")
    return Converter(root, info["version"], info["sdist_sha256"])


def install_converter(dest: Path | None = None, *, sdist: Path | None = None) -> Converter:
    """Extract the converter from the runtime's sdist into `dest` (downloaded with pip unless `sdist` is given).

    Idempotent: an existing converter of the installed version is kept. The
    folder is assembled under a temporary name and renamed when complete.
    """
    dest = Path(dest) if dest is not None else default_converter_dir()
    version = runtime_version()
    try:
        return find_converter(dest)
    except ModelError:
        pass
    with tempfile.TemporaryDirectory(prefix="auditor-sdist-") as tmp:
        if sdist is None:
            sdist = _download_sdist(version, Path(tmp))
        digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
        with atomic_path(dest, directory=True) as staging:
            _extract_parts(Path(sdist), staging)
            write_json({"package": RUNTIME_PACKAGE, "version": version, "sdist": Path(sdist).name,
                        "sdist_sha256": digest, "parts": list(CONVERTER_PARTS)}, staging / MANIFEST)
    log.info("installed llama.cpp converter of %s %s in %s", RUNTIME_PACKAGE, version, dest)
    return find_converter(dest)


def _download_sdist(version: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", RUNTIME_PACKAGE,
           f"{RUNTIME_PACKAGE}=={version}", "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        raise ModelError(f"cannot download the {RUNTIME_PACKAGE} {version} sdist with pip: "
                         f"{(done.stderr or done.stdout)[-800:]}")
    return found[0]


def _extract_parts(sdist: Path, staging: Path) -> None:
    """Copy vendor/llama.cpp/<part> members of the sdist into `staging`, refusing links and `..` paths."""
    wanted = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or parts[3] not in CONVERTER_PARTS:
                continue
            rel = Path(*parts[3:])
            if ".." in rel.parts or member.issym() or member.islnk():
                raise ModelError(f"{sdist}: unexpected member {member.name!r}")
            target = staging / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, target.open("wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, out)
                wanted += 1
    if not (staging / "convert_hf_to_gguf.py").is_file() or not (staging / "gguf-py" / "gguf").is_dir():
        raise ModelError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py with gguf-py inside")


def converter_architectures(converter: Converter) -> frozenset[str]:
    """HF architecture names (config.json `architectures[0]`) the converter has a text-model class for."""
    table = converter.root / "conversion" / "__init__.py"
    if table.is_file():
        for node in ast.parse(table.read_text()).body:
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) else None)
            if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
                return frozenset(ast.literal_eval(node.value))
    # Older single-file converters register classes with @ModelBase.register("Name", ...).
    names: set[str] = set()
    for node in ast.walk(ast.parse(converter.script.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register"):
            names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    if not names:
        raise ModelError(f"{converter.root}: cannot read the converter's list of architectures")
    return frozenset(names)


def check_convertible(architecture: str | None, converter: Converter | None = None) -> None:
    """Raise a ModelError naming `architecture` when llama.cpp's converter has no class for it."""
    converter = converter or find_converter()
    if not architecture:
        raise ModelError("the model config names no architecture (config.json `architectures`); "
                         "llama.cpp's converter cannot pick a class for it")
    if architecture not in converter_architectures(converter):
        raise ModelError(f"architecture {architecture!r}: llama.cpp's converter ({converter.describe()}) "
                         "cannot convert it to GGUF")


def convert_hf_dir(hf_dir: Path, out: Path, *, outtype: str = "f32", converter: Converter | None = None,
                   name: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Path:
    """Run `convert_hf_to_gguf.py hf_dir --outfile out --outtype outtype` offline; `out` appears only when it succeeded."""
    converter = converter or find_converter()
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    # gguf-py first: the converter's own gguf, never the site-packages one.
    env["PYTHONPATH"] = os.pathsep.join([str(converter.root / "gguf-py"), str(converter.root)])
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    out = Path(out)
    with atomic_path(out) as tmp:
        cmd = [sys.executable, str(converter.script), str(hf_dir), "--outfile", str(tmp), "--outtype", outtype]
        if name:
            cmd += ["--model-name", name]
        log.info("running %s", " ".join(cmd))
        try:
            done = subprocess.run(cmd, env=env, cwd=converter.root, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{hf_dir}: llama.cpp's converter ran past {timeout_s:.0f} s") from None
        log.debug("converter output:\n%s", done.stdout + done.stderr)
        if done.returncode != 0 or not tmp.is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-6:])
            raise ModelError(f"{hf_dir}: llama.cpp's converter failed (exit {done.returncode}): {tail}")
    return out
