"""The prompt format is fixed when the study is planned, before any model is loaded."""
from __future__ import annotations

import pytest

from auditor.core.errors import AuditorError
from auditor.data.prompt_format import CHAT_VERSION
from auditor.study.runner import plan_study
from auditor.study.spec import load_study


def test_chat_template_key_sets_the_format_and_changes_the_unit_keys(small_study, tmp_path):
    plain = load_study(small_study("a"))
    [default] = plan_study(plain)
    assert default.prompt_format.version == CHAT_VERSION  # the SmolLM2 tokenizer's own template
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    study = load_study(small_study("b", extra_top={"chat_template": str(template)}))
    assert study.chat_template == str(template) and study.hash != plain.hash
    [plan] = plan_study(study)
    assert plan.prompt_format.kind == "template" and plan.context.prompt_format == plan.prompt_format
    assert set(plan.keys.values()).isdisjoint(default.keys.values())
    missing = load_study(small_study("c", extra_top={"chat_template": str(tmp_path / "none.jinja")}))
    with pytest.raises(AuditorError, match="none.jinja: cannot read chat template"):
        plan_study(missing)
