"""Installing llama.cpp's converter from an sdist, reading its architectures, refusing early."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from auditor.artifacts import llama_converter as lc
from auditor.core.errors import ModelError

TABLE = 'TEXT_MODEL_MAP: dict[str, str] = {\n    "LlamaForCausalLM": "llama",\n    "Gemma3ForCausalLM": "gemma",\n}\n'


def _sdist(path, extra: dict[str, str] | None = None):
    """A fake llama-cpp-python sdist holding a vendor/llama.cpp tree (plus `extra` members)."""
    files = {
        "llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py": "print('converter')\n",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/conversion/__init__.py": TABLE,
        "llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/LICENSE": "MIT\n",
        "llama_cpp_python-0.3.36/vendor/llama.cpp/src/llama.cpp": "// not taken\n",
        "llama_cpp_python-0.3.36/llama_cpp/__init__.py": "",
        **(extra or {}),
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def installed(tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "runtime_version", lambda: "0.3.36")
    return lc.install_converter(tmp_path / "conv", sdist=_sdist(tmp_path / "sdist.tar.gz"))


def test_install_takes_only_the_converter_parts(installed):
    root = installed.root
    assert sorted(p.name for p in root.iterdir()) == ["LICENSE", "conversion", "convert_hf_to_gguf.py",
                                                      "converter.json", "gguf-py"]
    manifest = json.loads((root / "converter.json").read_text())
    assert manifest["version"] == "0.3.36" and len(manifest["sdist_sha256"]) == 64
    assert installed.script.is_file() and "0.3.36" in installed.describe()


def test_architectures_are_read_without_importing_the_converter(installed):
    assert lc.converter_architectures(installed) == {"LlamaForCausalLM", "Gemma3ForCausalLM"}
    lc.check_convertible("Gemma3ForCausalLM", installed)
    with pytest.raises(ModelError, match="'MambaForCausalLM'.*cannot convert it"):
        lc.check_convertible("MambaForCausalLM", installed)
    with pytest.raises(ModelError, match="names no architecture"):
        lc.check_convertible(None, installed)


def test_a_missing_or_stale_converter_says_to_run_setup(tmp_path, installed, monkeypatch):
    with pytest.raises(ModelError, match="auditor setup"):
        lc.find_converter(tmp_path / "nowhere")
    monkeypatch.setattr(lc, "runtime_version", lambda: "0.3.37")
    with pytest.raises(ModelError, match="0.3.36 but the runtime is 0.3.37"):
        lc.find_converter(installed.root)


def test_an_sdist_with_escaping_paths_or_no_converter_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "runtime_version", lambda: "0.3.36")
    bad = _sdist(tmp_path / "bad.tar.gz", {"llama_cpp_python-0.3.36/vendor/llama.cpp/conversion/../../x": "x"})
    with pytest.raises(ModelError, match="unexpected member"):
        lc.install_converter(tmp_path / "c1", sdist=bad)
    assert not (tmp_path / "c1").exists()
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(ModelError, match="no vendor/llama.cpp/convert_hf_to_gguf.py"):
        lc.install_converter(tmp_path / "c2", sdist=empty)
    assert not (tmp_path / "c2").exists()


def test_the_converter_runs_with_its_own_gguf_py_first(tmp_path, installed):
    """The subprocess imports the converter's gguf-py, not the installed gguf package."""
    (installed.root / "gguf-py" / "gguf" / "__init__.py").write_text("MARK = 'converter gguf-py'\n")
    installed.script.write_text(
        "import sys, gguf\n"
        "out = sys.argv[sys.argv.index('--outfile') + 1]\n"
        "open(out, 'w').write(gguf.MARK)\n")
    out = lc.convert_hf_dir(tmp_path, tmp_path / "m.gguf", converter=installed)
    assert out.read_text() == "converter gguf-py"
    installed.script.write_text("import sys\nsys.exit('no such tensor')\n")
    with pytest.raises(ModelError, match="no such tensor"):
        lc.convert_hf_dir(tmp_path, tmp_path / "n.gguf", converter=installed)
    assert not (tmp_path / "n.gguf").exists()
