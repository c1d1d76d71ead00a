"""A GGUF's tokenizer and config converted once, then read from the cache: the same objects as the direct conversion."""
from __future__ import annotations

import logging
import os
import shutil

import pytest

from auditor.artifacts.gguf_conversions import gguf_config, gguf_tokenizer
from auditor.core.cache import cache_dir

TEXTS = ["The old man and the young woman were both at the clinic.", "Who was forgetful? 你好 ünïcode\n\tend"]


def _direct(path):
    from transformers import AutoConfig, AutoTokenizer

    return (AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name),
            AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name))


def _no_gguf_parsing(monkeypatch):
    """From here on, converting a GGUF fails the test: what is asked must come from the cache."""
    from transformers import AutoConfig, AutoTokenizer

    for cls in (AutoTokenizer, AutoConfig):
        original = cls.from_pretrained.__func__

        def refuse(klass, *args, _original=original, **kwargs):
            assert "gguf_file" not in kwargs, "the GGUF was parsed again"
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(refuse))


def _assert_same_tokenizer(got, want):
    assert type(got) is type(want)
    assert got.get_vocab() == want.get_vocab()
    assert got.all_special_tokens == want.all_special_tokens
    assert (got.bos_token_id, got.eos_token_id, got.pad_token_id) == (want.bos_token_id, want.eos_token_id,
                                                                      want.pad_token_id)
    assert got.chat_template == want.chat_template and got.name_or_path == want.name_or_path
    for text in TEXTS:
        assert got(text).input_ids == want(text).input_ids
    messages = [{"role": "user", "content": TEXTS[0]}]
    if want.chat_template:
        assert (got.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                == want.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def test_converted_once_then_read_back_equal(smollm2_source, monkeypatch):
    path = smollm2_source.path
    want_tokenizer, want_config = _direct(path)
    first_tokenizer, first_config = gguf_tokenizer(path), gguf_config(path)  # converted and kept
    [entry] = list((cache_dir() / "gguf").iterdir())
    assert {"tokenizer.json", "tokenizer.done", "config.json"} <= {f.name for f in entry.iterdir()}
    assert not any(f.suffix in (".pkl", ".bin", ".pt") for f in entry.iterdir())  # JSON and text only

    _no_gguf_parsing(monkeypatch)
    cached_tokenizer, cached_config = gguf_tokenizer(path), gguf_config(path)
    for got in (first_tokenizer, cached_tokenizer):
        _assert_same_tokenizer(got, want_tokenizer)
    for got in (first_config, cached_config):
        assert got.to_dict() == want_config.to_dict()


def test_a_changed_file_is_converted_again(smollm2_source, tmp_path):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_source.path, copy)
    gguf_config(copy)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the file replaced in place
    gguf_config(copy)
    assert len(list((cache_dir() / "gguf").iterdir())) == 2


def test_an_unreadable_entry_is_converted_again_and_replaced(smollm2_source, caplog):
    path = smollm2_source.path
    want = gguf_tokenizer(path)
    [entry] = list((cache_dir() / "gguf").iterdir())
    (entry / "tokenizer.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="auditor.artifacts.gguf_conversions"):
        got = gguf_tokenizer(path)
    assert "cached tokenizer unreadable" in caplog.text
    _assert_same_tokenizer(got, want)
    assert (entry / "tokenizer.json").read_text().startswith("{") and gguf_tokenizer(path).get_vocab() == want.get_vocab()


def test_an_unwritable_cache_only_costs_the_next_conversion(smollm2_source, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("AUDITOR_CACHE_DIR", str(blocked))
    with caplog.at_level(logging.WARNING, logger="auditor.artifacts.gguf_conversions"):
        config = gguf_config(smollm2_source.path)
    assert config.model_type == "llama" and "could not keep" in caplog.text


@pytest.mark.parametrize("order", ["tokenizer first", "config first"])
def test_one_entry_holds_both_halves(smollm2_source, order, monkeypatch):
    path = smollm2_source.path
    calls = [gguf_tokenizer, gguf_config] if order == "tokenizer first" else [gguf_config, gguf_tokenizer]
    for call in calls:
        call(path)
    _no_gguf_parsing(monkeypatch)
    gguf_tokenizer(path)
    gguf_config(path)
