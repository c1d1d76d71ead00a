"""How a BBQ prompt is laid out for a model: its chat template, a template file, or the plain format.

`auditor.data.prompts` builds every prompt through `tokenizer.apply_chat_template`.
A `PromptFormat` decides what that call renders, by wrapping the tokenizer
(`PromptFormat.wrap`), so the prompt builder has one code path for every format:

- `chat` (version `bbq-letter-v1`): the model's own chat template (instruct models);
- `template` (version `bbq-letter-v1+template-<sha256[:12]>`): a Jinja chat template
  from a file (`--chat-template FILE`, study key `chat_template`), for models whose
  tokenizer has none or a wrong one;
- `plain` (version `bbq-plain-v1`): for base models without a chat template:

      [BOS text, when the tokenizer adds BOS]<system prompt>

      <context>
      <question>
      A. <option>
      B. <option>
      C. <option>
      Answer with A, B or C.
      Answer:
      <- the option letter is scored here, as the first token after the newline

The format is chosen before the model is loaded (`choose_format`), from whether
the tokenizer has a chat template, and its version goes into every record, the
unit keys and the report.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.core.errors import AuditorError
from auditor.data.prompts import TEMPLATE_VERSION
from auditor.data.tokens import bos_id

CHAT, TEMPLATE, PLAIN = "chat", "template", "plain"
CHAT_VERSION = TEMPLATE_VERSION  # the chat-template letter prompt of auditor.data.prompts
PLAIN_VERSION = "bbq-plain-v1"
PLAIN_ANSWER_CUE = "Answer:\n"


@dataclass(frozen=True)
class PromptFormat:
    """Which layout the prompts use; `version` is what records and reports show."""

    kind: str  # CHAT | TEMPLATE | PLAIN
    version: str
    template: str | None = None  # the Jinja text of a template file
    origin: str = ""  # where the template came from (file path), for provenance

    def describe(self) -> str:
        if self.kind == TEMPLATE:
            return f"{self.version} (chat template from {self.origin})"
        if self.kind == PLAIN:
            return f"{self.version} (plain text: no chat template; base-model format)"
        return f"{self.version} (the model's own chat template)"

    def wrap(self, tokenizer) -> Any:
        """`tokenizer` whose apply_chat_template renders this format; the tokenizer itself for CHAT."""
        return tokenizer if self.kind == CHAT else _FormattedTokenizer(tokenizer, self)


def plain_text(messages: list[dict], bos_text: str) -> str:
    """The plain format of a system + user conversation (see the module docstring)."""
    parts = [m["content"] for m in messages]
    return bos_text + "\n\n".join(parts) + "\n" + PLAIN_ANSWER_CUE


class _FormattedTokenizer:
    """Delegates everything to the tokenizer except how a conversation becomes text."""

    def __init__(self, tokenizer, fmt: PromptFormat) -> None:
        self._tokenizer = tokenizer
        self._format = fmt

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def apply_chat_template(self, conversation, **kwargs):
        if self._format.kind == TEMPLATE:
            return self._tokenizer.apply_chat_template(conversation, chat_template=self._format.template, **kwargs)
        if kwargs.get("tokenize", True):
            raise AuditorError("the plain prompt format renders text only (tokenize=False)")
        return plain_text(conversation, bos_text(self._tokenizer))


def bos_text(tokenizer) -> str:
    """The BOS token's text when the tokenizer adds BOS to what it encodes, else ''."""
    return str(tokenizer.bos_token) if bos_id(tokenizer) is not None and tokenizer.bos_token else ""


def check_jinja(text: str, where: str | Path) -> None:
    """Compile a chat template as transformers does (a sandboxed Jinja environment); AuditorError naming
    `where` and the line when it is not valid Jinja, so it fails before any model is loaded."""
    from jinja2 import TemplateSyntaxError

    try:  # transformers' own compiler: its extensions ({% generation %}, loop controls) are valid there
        from transformers.utils.chat_template_utils import _compile_jinja_template as compile_template
    except ImportError:  # another transformers version: a plain sandbox with loop controls
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def compile_template(source: str):
            return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                 extensions=["jinja2.ext.loopcontrols"]).from_string(source)
    try:
        compile_template(text)
    except TemplateSyntaxError as exc:
        raise AuditorError(f"{where}:{exc.lineno}: not a valid Jinja chat template ({exc.message})") from None


def template_from_file(path: str | Path) -> PromptFormat:
    """A TEMPLATE format from a Jinja file; an error names the file when it is missing, empty, not UTF-8 or
    not valid Jinja."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AuditorError(f"{path}: cannot read chat template (not UTF-8 text: {exc.reason} at byte "
                           f"{exc.start})") from None
    except OSError as exc:
        raise AuditorError(f"{path}: cannot read chat template ({exc.strerror or exc})") from None
    if not text.strip():
        raise AuditorError(f"{path}: chat template file is empty")
    check_jinja(text, path)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return PromptFormat(TEMPLATE, f"{CHAT_VERSION}+template-{digest}", text, str(path))


def choose_format(has_chat_template: bool, template_file: str | Path | None = None) -> PromptFormat:
    """A template file when given, else the model's chat template when it has one, else the plain format."""
    if template_file is not None:
        return template_from_file(template_file)
    return PromptFormat(CHAT, CHAT_VERSION) if has_chat_template else PromptFormat(PLAIN, PLAIN_VERSION)
