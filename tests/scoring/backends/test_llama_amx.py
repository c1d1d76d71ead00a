"""Whether llama.cpp keeps its extra weight buffers (AMX kernels) on: asked of the build in a child process."""
from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from auditor.scoring.backends import llama_amx
from tests.conftest import make_tiny_llama

DIES_BY_SIGILL = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
EXITS_CLEANLY = [sys.executable, "-c", "pass"]
FAILS = [sys.executable, "-c", "raise SystemExit('cannot load')"]


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    llama_amx._verdict.cache_clear()
    yield
    llama_amx._verdict.cache_clear()


@pytest.fixture(scope="module")
def q8_gguf(tmp_path_factory, smollm2_tokenizer):
    from auditor.artifacts.gguf_writer import write_gguf
    from compressors.gguf_quant import quantize_gguf

    folder = tmp_path_factory.mktemp("amx")
    f32 = write_gguf(make_tiny_llama(seed=5), folder / "tiny-f32.gguf", tokenizer=smollm2_tokenizer,
                     outtype="f32").path
    quantize_gguf(f32, folder / "tiny-q8_0.gguf", "Q8_0", n_threads=1)
    return f32, folder / "tiny-q8_0.gguf"


@pytest.fixture
def children(monkeypatch):
    """Replace the probe's child by a given command; count the children started."""
    started = []

    def use(command):
        def child(path):
            started.append(path)
            return command
        monkeypatch.setattr(llama_amx, "_child_command", child)
    use.started = started
    return use


def _amx(monkeypatch, on: bool):
    monkeypatch.setattr(llama_amx, "amx_cpu", lambda: on)


def test_off_amx_cpus_the_default_stays_without_a_probe(monkeypatch, children, q8_gguf):
    _amx(monkeypatch, False)
    children(DIES_BY_SIGILL)
    assert llama_amx.extra_weight_buffers(q8_gguf[1]) is True
    assert children.started == []


def test_an_unquantized_file_on_amx_is_opened_with_the_buffers_off_without_a_probe(monkeypatch, children, q8_gguf):
    _amx(monkeypatch, True)
    children(EXITS_CLEANLY)
    assert llama_amx.extra_weight_buffers(q8_gguf[0]) is False
    assert children.started == []


def test_a_build_whose_amx_kernels_die_keeps_the_buffers_off_and_says_how_to_rebuild(monkeypatch, children, q8_gguf,
                                                                                    caplog):
    _amx(monkeypatch, True)
    children(DIES_BY_SIGILL)
    with caplog.at_level(logging.WARNING):
        assert llama_amx.extra_weight_buffers(q8_gguf[1]) is False
    assert "signal 4" in caplog.text and "amx-tile-config.patch" in caplog.text and str(q8_gguf[1]) in caplog.text
    kept = json.loads((llama_amx.cache_dir() / llama_amx.VERDICTS_FILE).read_text())["entries"]
    assert [(v["runs"], v["signal"]) for v in kept.values()] == [(False, 4)]

    llama_amx._verdict.cache_clear()  # another process: the kept verdict answers, no child
    children(EXITS_CLEANLY)
    assert llama_amx.extra_weight_buffers(q8_gguf[1]) is False
    assert len(children.started) == 1


def test_a_build_that_runs_them_keeps_the_buffers_on_until_the_file_changes(monkeypatch, children, q8_gguf, tmp_path):
    _amx(monkeypatch, True)
    copy = tmp_path / "copy-q8_0.gguf"
    copy.write_bytes(q8_gguf[1].read_bytes())
    children(EXITS_CLEANLY)
    assert llama_amx.extra_weight_buffers(copy) is True
    llama_amx._verdict.cache_clear()
    assert llama_amx.extra_weight_buffers(copy) is True
    assert len(children.started) == 1

    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a rewritten file is asked again
    children(DIES_BY_SIGILL)
    assert llama_amx.extra_weight_buffers(copy) is False
    assert len(children.started) == 2


def test_a_probe_that_fails_otherwise_turns_the_buffers_off_and_is_asked_again(monkeypatch, children, q8_gguf, caplog):
    _amx(monkeypatch, True)
    children(FAILS)
    with caplog.at_level(logging.WARNING):
        assert llama_amx.extra_weight_buffers(q8_gguf[1]) is False
    assert "exit 1" in caplog.text and "cannot load" in caplog.text
    llama_amx._verdict.cache_clear()
    children(EXITS_CLEANLY)
    assert llama_amx.extra_weight_buffers(q8_gguf[1]) is True
    assert len(children.started) == 2


def test_the_child_decodes_a_real_quantized_file(q8_gguf):
    assert llama_amx.probe(q8_gguf[1]) == (True, None)


@pytest.mark.slow
def test_the_makefile_build_runs_ggml_amx_kernels_on_the_embedded_model():
    """On an AMX CPU the embedded Q4_1 model's weights go to ggml's AMX buffer; the unpatched wheel died there
    with SIGILL, alone and after a torch bfloat16 matmul (llama_amx's docstring). The Makefile's build runs them."""
    from auditor.artifacts.models import embedded_default_path

    if not llama_amx.amx_cpu():
        pytest.skip("this CPU has no AMX: llama.cpp's AMX kernels are not used")
    assert llama_amx.probe(embedded_default_path()) == (True, None)
