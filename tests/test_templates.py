"""Unit tests for curate/templates.py: sandboxed judge templates."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import jinja2
import pytest
from conftest import assert_one_line_error, invoke
from jinja2.exceptions import SecurityError

from curate.config import DataConfig
from curate.data.choices import format_choices
from curate.data.items import load_items
from curate.errors import DereasonError, TemplateError
from curate.parse import PARSERS
from curate.templates import (
    JudgeTemplate,
    available_templates,
    bundled_prompts_dir,
    load_template,
)

BUNDLED = ["difficulty/intensity", "difficulty/intensity_prefilled", "difficulty/intensity_score_only",
           "difficulty/level_prefilled",
           "solve/step_by_step", "verify/equivalence"]
HEADER = "{#-\nparser: score_only\ndescription: a test template\n-#}\n"  # lines 1-4
CHOICES = [{"label": "A", "text": "3"}, {"label": "B", "text": "4"}]
ITEM = {"id": "item-7", "question": "What is 17 * 23?", "reference": "391", "choices": None,
        "domain": "arithmetic", "extra": {}}


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.jinja"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def bundled_file(name: str) -> Path:
    return bundled_prompts_dir() / f"{name}.jinja"


# --------------------------------------------------------------------------------------------
# Bundled templates
# --------------------------------------------------------------------------------------------

def test_bundled_prompts_dir_holds_the_templates():
    for name in BUNDLED:
        assert bundled_file(name).is_file()


@pytest.mark.parametrize("name, parser", [
    ("difficulty/intensity", "tagged_score"),
    ("difficulty/intensity_score_only", "score_only"),
    ("difficulty/intensity_prefilled", "score_only"),
])
def test_bundled_template_loads_with_declared_parser(name, parser):
    template = load_template(name)
    assert isinstance(template, JudgeTemplate)
    assert template.name == name
    assert template.parser is PARSERS[parser]
    assert template.parser.name == parser
    assert template.description.strip()  # both bundled templates describe themselves
    assert template.source == bundled_file(name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", BUNDLED)
def test_identity_is_name_at_16_hex_of_file_content(name):
    template = load_template(name)
    expected_hash = hashlib.sha256(bundled_file(name).read_text(encoding="utf-8").encode()).hexdigest()[:16]
    assert re.fullmatch(rf"{re.escape(name)}@[0-9a-f]{{16}}", template.identity)
    assert template.content_hash == expected_hash
    assert template.identity == f"{name}@{expected_hash}"
    assert load_template(name).identity == template.identity  # stable across loads


def test_bundled_templates_have_distinct_identities():
    assert len({load_template(n).content_hash for n in BUNDLED}) == len(BUNDLED)


def test_available_templates_lists_bundled():
    available = available_templates()
    assert set(BUNDLED) <= set(available)
    assert available == sorted(available)


# --------------------------------------------------------------------------------------------
# Identity follows the file's content
# --------------------------------------------------------------------------------------------

def test_identity_changes_when_content_changes_via_template_dir(tmp_path):
    copy = tmp_path / "difficulty" / "intensity.jinja"
    copy.parent.mkdir()
    shutil.copyfile(bundled_file("difficulty/intensity"), copy)
    same = load_template("difficulty/intensity", template_dir=tmp_path)
    assert same.identity == load_template("difficulty/intensity").identity  # same name, same bytes

    copy.write_text(copy.read_text(encoding="utf-8").replace("Judge the reasoning", "Judge only the reasoning"),
                    encoding="utf-8")
    edited = load_template("difficulty/intensity", template_dir=tmp_path)
    assert edited.name == "difficulty/intensity"
    assert edited.identity.startswith("difficulty/intensity@")
    assert edited.content_hash != same.content_hash
    assert edited.identity != same.identity
    assert "Judge only the reasoning" in edited.render(ITEM)[0]["content"]


def test_identity_changes_when_content_changes_via_path(tmp_path):
    path = tmp_path / "mine.jinja"
    shutil.copyfile(bundled_file("difficulty/intensity_score_only"), path)
    before = load_template(str(path))
    assert before.name == str(path)
    assert before.identity == f"{path}@{before.content_hash}"
    assert before.content_hash == load_template("difficulty/intensity_score_only").content_hash
    assert before.parser is PARSERS["score_only"]

    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # one byte more
    after = load_template(str(path))
    assert after.content_hash != before.content_hash
    assert after.content_hash == hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()[:16]


def test_load_by_relative_path(tmp_path, monkeypatch):
    write(tmp_path / "sub", "rel", HEADER + "{% block user %}REL {{ question }}{% endblock %}\n")
    monkeypatch.chdir(tmp_path)
    template = load_template("sub/rel.jinja")
    assert template.name == "sub/rel.jinja"
    assert template.render(ITEM) == [{"role": "user", "content": "REL What is 17 * 23?"}]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def render(name: str, item: dict) -> list[dict]:
    """A bundled template's messages for item; a verifier template also sees the answer it judges."""
    template = load_template(name)
    return template.render({**item, "answer": "4"} if template.kind == "verifier" else item)


def test_a_verifier_template_renders_the_answer_it_judges():
    template = load_template("verify/equivalence")
    assert (template.kind, template.parser) == ("verifier", None)
    item = {"id": "x", "question": "What is 2+2?", "reference": "4"}
    user = template.render({**item, "answer": "four"})[1]["content"]
    assert "Reference answer: 4\nCandidate answer: four" in user
    with pytest.raises(TemplateError, match="'answer' is undefined .*available variables: id, question, reference"):
        template.render(item)  # items alone (what judge and response templates get) hold no answer


def test_a_verifier_template_declares_no_parser(tmp_path):
    path = tmp_path / "v.jinja"
    path.write_text("{#-\nkind: verifier\nparser: score_only\n-#}\n{% block user %}{{ answer }}{% endblock %}\n")
    with pytest.raises(TemplateError, match="is a verifier template, so it declares no parser"):
        load_template(str(path))


@pytest.mark.parametrize("name", BUNDLED)
def test_render_gives_system_then_user_with_question(name):
    template = load_template(name)
    messages = render(name, {"id": "x", "question": "Prove that sqrt(2) is irrational."})
    assert [m["role"] for m in messages] == ["system", "user"] + (["assistant"] if template.prefill else [])
    assert all(set(m) == {"role", "content"} for m in messages)
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    assert "Prove that sqrt(2) is irrational." in messages[1]["content"]
    assert "Prove that sqrt(2) is irrational." not in messages[0]["content"]
    assert messages[1]["content"] == messages[1]["content"].strip()


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("labels", ["ABCDE", "12345"])
def test_render_shows_labelled_choices_in_order(name, labels):
    texts = ["4", "6", "7", "9", "10"]
    item = {"id": "x", "question": "Which is prime?",
            "choices": [{"label": label, "text": text} for label, text in zip(labels, texts)]}
    user = render(name, item)[1]["content"]
    lines = user.splitlines()
    labelled = [line for line in lines if re.match(r"^[A-Z0-9]\. ", line)]
    assert labelled == [f"{label}. {text}" for label, text in zip(labels, texts)]
    assert lines.index(labelled[0]) > lines.index("Which is prime?")


@pytest.mark.parametrize("name", BUNDLED)
@pytest.mark.parametrize("choices", [None, []])
def test_render_without_choices_has_no_letters(name, choices):
    user = render(name, {"id": "x", "question": "What is 2+2?", "choices": choices})[1]["content"]
    assert not any(re.match(r"^[A-Z]\. ", line) for line in user.splitlines())
    assert "Choices" not in user


def test_intensity_shows_domain_only_when_present():
    template = load_template("difficulty/intensity")
    with_domain = template.render({"id": "x", "question": "Q?", "domain": "organic chemistry"})[1]["content"]
    without = template.render({"id": "x", "question": "Q?"})[1]["content"]
    assert with_domain.splitlines()[0] == "Domain: organic chemistry"
    assert "Domain" not in without


def test_score_only_user_message_exact():
    user = load_template("difficulty/intensity_score_only").render(
        {"id": "x", "question": "What is 2+2?", "choices": CHOICES})[1]["content"]
    assert user == "What is 2+2?\n\nA. 3\nB. 4"


def test_intensity_user_message_exact():
    user = load_template("difficulty/intensity").render(
        {"id": "x", "question": "What is 2+2?", "choices": CHOICES, "domain": "arithmetic"})[1]["content"]
    assert user == ("Domain: arithmetic\nProblem:\nWhat is 2+2?\n\nChoices:\nA. 3\nB. 4\n\n"
                    "Rate the reasoning intensity of this problem.")


# sha256 of json.dumps([template.render(item) for item in bundled:math-sample]) with the templates of
# 8cddf10, which the bundled judge was trained on: items without choices must render byte-identically.
RENDERED_AT_8CDDF10 = {
    "difficulty/intensity": "bb02b979dd000dfae3868663eda64d31a34964329dfc98bd6c32e2d3de2307ac",
    "difficulty/intensity_score_only": "cf6fdbcc3b2bdfc3360b57f939d173568d164307d2d83f436cc426ecadfa2110",
}


@pytest.mark.parametrize("name", list(RENDERED_AT_8CDDF10))
def test_items_without_choices_render_as_the_bundled_judge_was_trained(name):
    items = load_items(DataConfig(source="bundled:math-sample")).items
    assert items["choices"].null_count() == items.height
    template = load_template(name)
    rendered = [template.render(item) for item in items.iter_rows(named=True)]
    assert hashlib.sha256(json.dumps(rendered).encode()).hexdigest() == RENDERED_AT_8CDDF10[name]


def test_format_choices_filter_in_own_templates(tmp_path):
    write(tmp_path, "mc", HEADER + "{% block user %}{{ question }}\n{{ choices | format_choices }}{% endblock %}\n")
    rendered = load_template("mc", template_dir=tmp_path).render({"id": "a", "question": "Q", "choices": CHOICES})
    assert rendered == [{"role": "user", "content": "Q\nA. 3\nB. 4"}]
    assert format_choices(CHOICES) == "A. 3\nB. 4"


def test_intensity_system_asks_for_tagged_score():
    system = load_template("difficulty/intensity").render(ITEM)[0]["content"]
    assert "<score>N</score>" in system


def test_render_all_variables_and_extra(tmp_path):
    write(tmp_path, "vars", HEADER + "{% block system %}S:{{ domain }}{% endblock %}\n"
          "{% block user %}{{ id }}|{{ question }}|{{ reference }}|{{ choices | join(',') }}|"
          "{{ extra.source }}|{{ extra['level'] }}|{{ extra.nested.k }}{% endblock %}\n")
    template = load_template("vars", template_dir=tmp_path)
    item = {"id": "i1", "question": "Q", "reference": "R", "choices": ["a", "b"], "domain": "D",
            "extra": {"source": "gsm8k", "level": 3, "nested": {"k": "deep"}}}
    assert template.render(item) == [
        {"role": "system", "content": "S:D"},
        {"role": "user", "content": "i1|Q|R|a,b|gsm8k|3|deep"},
    ]


def test_render_optional_fields_default_to_none_and_empty_extra(tmp_path):
    write(tmp_path, "opt", HEADER + "{% block user %}{{ reference }}|{{ choices }}|{{ domain }}|"
          "{{ extra | length }}|{{ question }}{% endblock %}\n")
    template = load_template("opt", template_dir=tmp_path)
    assert template.render({"id": "a", "question": "Q"}) == [{"role": "user", "content": "None|None|None|0|Q"}]
    assert template.render({"id": "a", "question": "Q", "extra": None})[0]["content"] == "None|None|None|0|Q"


def test_render_without_system_block_gives_only_user(tmp_path):
    write(tmp_path, "useronly", HEADER + "{% block user %}  Solve: {{ question }}\n\n{% endblock %}\n")
    assert load_template("useronly", template_dir=tmp_path).render(ITEM) == [
        {"role": "user", "content": "Solve: What is 17 * 23?"}]


def test_render_does_not_autoescape(tmp_path):
    write(tmp_path, "esc", HEADER + "{% block user %}{{ question }}{% endblock %}\n")
    question = "Is <b>x</b> & y > z? Use \"quotes\" and 'apostrophes'."
    assert load_template("esc", template_dir=tmp_path).render({"id": "a", "question": question}) == [
        {"role": "user", "content": question}]


def test_render_is_repeatable_and_independent(tmp_path):
    write(tmp_path, "rep", HEADER + "{% block user %}{{ question }}{% endblock %}\n")
    template = load_template("rep", template_dir=tmp_path)
    assert template.render({"id": "1", "question": "first"})[0]["content"] == "first"
    assert template.render({"id": "2", "question": "second"})[0]["content"] == "second"
    assert template.render({"id": "1", "question": "first"})[0]["content"] == "first"


# --------------------------------------------------------------------------------------------
# Render-time errors
# --------------------------------------------------------------------------------------------

UNDEFINED_IN_USER = (HEADER                                   # lines 1-4
                     + "{% block system %}sys{% endblock %}\n"   # line 5
                     + "{% block user -%}\n"                     # line 6
                     + "Problem: {{ question }}\n"               # line 7
                     + "\n"                                      # line 8
                     + "Hint: {{ difficulty_hint }}\n"           # line 9
                     + "{%- endblock %}\n")                      # line 10
UNDEFINED_IN_SYSTEM = (HEADER                                 # lines 1-4
                       + "{% block system -%}\n"                 # line 5
                       + "Rate it.\n"                            # line 6
                       + "Also {{ rubric }}\n"                   # line 7
                       + "{%- endblock %}\n"                     # line 8
                       + "{% block user %}{{ question }}{% endblock %}\n")
UNDEFINED_DEEP = (HEADER + "{% block user -%}\n" + "filler line\n" * 12
                  + "{{ question }} {{ extra.missing_key }}\n{%- endblock %}\n")  # line 18

UNDEFINED_IN_CONDITION = (HEADER                              # lines 1-4
                          + "{% block user -%}\n"               # line 5
                          + "{{ question }}\n"                  # line 6
                          + "{% for c in choices or [] %}\n"    # line 7
                          + "{{ c }}\n"                         # line 8
                          + "{% endfor %}\n"                    # line 9
                          + "{% if level > 2 %}hard{% endif %}\n"  # line 10
                          + "{%- endblock %}\n")


@pytest.mark.parametrize("text, variable", [
    (UNDEFINED_IN_CONDITION, "level"),
    (UNDEFINED_IN_USER, "difficulty_hint"),
    (UNDEFINED_IN_SYSTEM, "rubric"),
    (UNDEFINED_DEEP, "missing_key"),
])
def test_undefined_variable_raises_template_error_at_render(tmp_path, text, variable):
    write(tmp_path, "undef", text)
    template = load_template("undef", template_dir=tmp_path)  # loading is fine
    with pytest.raises(TemplateError) as info:
        template.render({"id": "item-42", "question": "Q", "choices": ["x"], "extra": {}})
    message = str(info.value)
    assert "'undef'" in message
    assert variable in message
    assert "item-42" in message
    assert re.search(r"line \d+", message)
    assert isinstance(info.value.__cause__, jinja2.UndefinedError)
    assert isinstance(info.value, DereasonError)


# Regression guard: _template_line once reported the line of Jinja's generated Python code.
@pytest.mark.parametrize("text, line", [
    (UNDEFINED_IN_USER, 9),
    (UNDEFINED_IN_SYSTEM, 7),
    (UNDEFINED_DEEP, 18),
    (UNDEFINED_IN_CONDITION, 10),
])
def test_undefined_variable_names_correct_line(tmp_path, text, line):
    write(tmp_path, "undef", text)
    template = load_template("undef", template_dir=tmp_path)
    with pytest.raises(TemplateError) as info:
        template.render({"id": "item-42", "question": "Q", "choices": ["x"], "extra": {}})
    assert f"template 'undef', line {line}:" in str(info.value)


@pytest.mark.parametrize("expression", ["{{ 1 / 0 }}", "{{ question + 1 }}"])
def test_runtime_error_in_expression_is_template_error(tmp_path, expression):
    write(tmp_path, "boom", HEADER + "{% block user %}" + expression + "{% endblock %}\n")
    template = load_template("boom", template_dir=tmp_path)
    with pytest.raises(TemplateError, match="'boom'"):
        template.render(ITEM)


def test_missing_required_item_key_raises():
    with pytest.raises(KeyError):
        load_template("difficulty/intensity").render({"id": "x"})


# --------------------------------------------------------------------------------------------
# Load-time errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, line", [
    ("{% block user %}\nok\n{% if %}\n{% endblock %}\n", 7),
    ("{% block user %}\nok\nok\n{{ question | }}\n{% endblock %}\n", 8),
    ("{% block user %}\nok\n{% endif %}\n{% endblock %}\n", 7),
    ("{% block user %}\n{{ question }}\n{% bogus %}\n{% endblock %}\n", 7),
    ("{% block user %}\n\n\n\n\n\n{{ question ]] }}\n{% endblock %}\n", 11),
])
def test_syntax_error_names_template_and_line_at_load(tmp_path, body, line):
    write(tmp_path, "broken", HEADER + body)
    with pytest.raises(TemplateError) as info:
        load_template("broken", template_dir=tmp_path)
    assert f"template 'broken', line {line}:" in str(info.value)
    assert isinstance(info.value.__cause__, jinja2.TemplateSyntaxError)


def test_syntax_error_via_path_names_the_path(tmp_path):
    path = write(tmp_path, "broken", HEADER + "{% block user %}\n{% if %}\n{% endblock %}\n")
    with pytest.raises(TemplateError, match=rf"template '{re.escape(str(path))}', line 6"):
        load_template(str(path))


@pytest.mark.parametrize("text, fragment", [
    ("{% block user %}{{ question }}{% endblock %}\n", "missing metadata header"),
    ("Intro text\n{#-\nparser: score_only\n-#}\n{% block user %}{{ question }}{% endblock %}\n",
     "missing metadata header"),
    ("{#-\nparser: regex_score\n-#}\n{% block user %}{{ question }}{% endblock %}\n", "'regex_score'"),
    ("{#-\ndescription: no parser here\n-#}\n{% block user %}{{ question }}{% endblock %}\n", "parser None"),
    ("{#-\nparser: [unclosed\n-#}\n{% block user %}{{ question }}{% endblock %}\n", "not valid YAML"),
    ("{#-\n- just\n- a list\n-#}\n{% block user %}{{ question }}{% endblock %}\n", "YAML mapping"),
    (HEADER + "{% block system %}{{ question }}{% endblock %}\n", "no {% block user %}"),
    (HEADER + "Problem: {{ question }}\n", "no {% block user %}"),
])
def test_bad_template_structure_raises(tmp_path, text, fragment):
    write(tmp_path, "bad", text)
    with pytest.raises(TemplateError) as info:
        load_template("bad", template_dir=tmp_path)
    assert "'bad'" in str(info.value)
    assert fragment in str(info.value)


def test_unknown_parser_message_lists_known_parsers(tmp_path):
    write(tmp_path, "bad", "{#-\nparser: json_score\n-#}\n{% block user %}x{% endblock %}\n")
    with pytest.raises(TemplateError) as info:
        load_template("bad", template_dir=tmp_path)
    assert "score_only" in str(info.value) and "tagged_score" in str(info.value)


@pytest.mark.parametrize("header, parser, description", [
    ("{#\nparser: tagged_score\n#}\n", "tagged_score", ""),
    ("  \n{#- parser: score_only -#}\n", "score_only", ""),
    ("{#-\nparser: score_only\ndescription: rates things\n-#}\n", "score_only", "rates things"),
])
def test_header_variants_accepted(tmp_path, header, parser, description):
    write(tmp_path, "ok", header + "{% block user %}{{ question }}{% endblock %}\n")
    template = load_template("ok", template_dir=tmp_path)
    assert template.parser is PARSERS[parser]
    assert template.description == description


# --------------------------------------------------------------------------------------------
# Sandbox
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression", [
    "{{ question.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ question.__class__ }}",
    "{{ extra.__class__.__base__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ (1).__class__.__mro__ }}",
])
def test_sandbox_blocks_python_internals(tmp_path, expression):
    write(tmp_path, "evil", HEADER + "{% block user %}" + expression + "{% endblock %}\n")
    template = load_template("evil", template_dir=tmp_path)
    with pytest.raises((TemplateError, SecurityError)) as info:
        messages = template.render({"id": "a", "question": "q", "extra": {"k": 1}})
        pytest.fail(f"rendered internals: {messages!r}")  # pragma: no cover
    message = str(info.value)
    assert "<class 'object'>" not in message
    assert "<class 'type'>" not in message
    assert "__builtins__" not in message
    chain = info.value if isinstance(info.value, SecurityError) else info.value.__cause__
    assert isinstance(chain, SecurityError)


def test_sandbox_is_immutable(tmp_path):
    write(tmp_path, "mutate", HEADER + "{% block user %}{{ extra.update({'k': 2}) }}{% endblock %}\n")
    template = load_template("mutate", template_dir=tmp_path)
    extra = {"k": 1}
    with pytest.raises((TemplateError, SecurityError)):
        template.render({"id": "a", "question": "q", "extra": extra})
    assert extra == {"k": 1}


@pytest.mark.parametrize("body, bound", [
    ('{{ "a" * 3000000000 }}', "a str repeated 3,000,000,000 times would hold"),
    ("{{ (range(3) | list) * 1000000000 }}", "a list repeated 1,000,000,000 times"),
    ("{{ 7 ** 100000000 }}", "7 ** 100000000 (in digits) would hold"),
    ("{{ question | center(1000000000) }}", "the filter center's result would hold 1,000,000,000 characters"),
    ("{{ question.ljust(1000000000) }}", "the result of ljust would hold"),
    ('{{ "%999999999d" % 1 }}', "a %-formatted string's width"),
    ('{{ "{:>999999999}".format(1) }}', "the result of format"),
    ('{% set s = "a" * 100000 %}{{ s | replace("a", s) }}', "the filter replace's result would hold 10,000,100,000"),
    ('{% set s = "a" * 100000 %}{{ s.replace("a", s) }}', "the result of replace would hold"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "the template's loops ran past 1,000,000 steps in one render"),
    ('{% for i in range(100000) %}{{ "x" * 100 }}{% endfor %}', "the rendered text passed the bound of 8,000,000"),
])
def test_a_template_cannot_exhaust_the_machine(tmp_path, body, bound):
    """Each would take gigabytes or minutes unbounded; bounded, it fails at once, naming the template and line."""
    write(tmp_path, "greedy", HEADER + "{% block user %}\nQuestion: {{ question }}\n" + body + "\n{% endblock %}\n")
    template = load_template("greedy", template_dir=tmp_path)  # nothing is evaluated at load
    started = time.monotonic()
    with pytest.raises(TemplateError, match=re.escape("template 'greedy', line 7: ")) as info:
        template.render(ITEM)
    assert bound in str(info.value) and time.monotonic() - started < 5


def test_bounds_leave_ordinary_templates_alone(tmp_path):
    body = ('{% for c in question %}{{ c }}{% endfor %} {{ "-" * 40 }} {{ "%5.2f" % 3.14159 }} {{ 2 ** 64 }} '
            "{{ question | center(30) }} {{ (question * 3) | replace('17', 'seventeen') }} {{ (10 ** 20) | string }}")
    write(tmp_path, "fine", HEADER + "{% block user %}" + body + "{% endblock %}\n")
    rendered = load_template("fine", template_dir=tmp_path).render(ITEM)[0]["content"]
    assert rendered.startswith("What is 17 * 23? " + "-" * 40 + "  3.14 18446744073709551616")
    assert rendered.endswith("What is seventeen * 23?What is seventeen * 23?What is seventeen * 23? " + "1" + "0" * 20)


# --------------------------------------------------------------------------------------------
# Search order and unknown templates
# --------------------------------------------------------------------------------------------

def test_template_dir_wins_over_bundled(tmp_path):
    write(tmp_path / "difficulty", "intensity",
          HEADER + "{% block user %}CUSTOM {{ question }}{% endblock %}\n")
    custom = load_template("difficulty/intensity", template_dir=tmp_path)
    assert custom.parser is PARSERS["score_only"]
    assert custom.render(ITEM) == [{"role": "user", "content": "CUSTOM What is 17 * 23?"}]
    assert custom.description == "a test template"

    bundled = load_template("difficulty/intensity")
    assert bundled.parser is PARSERS["tagged_score"]
    assert bundled.identity != custom.identity


def test_template_dir_as_str_and_bundled_still_reachable(tmp_path):
    write(tmp_path, "mine", HEADER + "{% block user %}MINE {{ question }}{% endblock %}\n")
    assert load_template("mine", template_dir=str(tmp_path)).render(ITEM)[0]["content"] == "MINE What is 17 * 23?"
    other = load_template("difficulty/intensity_score_only", template_dir=str(tmp_path))
    assert other.parser is PARSERS["score_only"]
    assert other.identity == load_template("difficulty/intensity_score_only").identity


@pytest.mark.parametrize("name", ["difficulty/nope", "intensity", "difficulty/intensity.jinja"])
def test_unknown_template_lists_available(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # so that "difficulty/intensity.jinja" is not a file here
    with pytest.raises(TemplateError) as info:
        load_template(name)
    message = str(info.value)
    assert repr(name) in message
    for bundled in BUNDLED:
        assert repr(bundled) in message


def test_unknown_template_lists_template_dir_entries(tmp_path):
    write(tmp_path / "team", "strict", HEADER + "{% block user %}{{ question }}{% endblock %}\n")
    with pytest.raises(TemplateError) as info:
        load_template("team/lenient", template_dir=tmp_path)
    assert "'team/strict'" in str(info.value)
    assert "'difficulty/intensity'" in str(info.value)
    assert available_templates(tmp_path) == sorted(available_templates() + ["team/strict"])


def test_missing_jinja_path_is_template_error(tmp_path):
    with pytest.raises(TemplateError, match="no template"):
        load_template(str(tmp_path / "absent.jinja"))


def test_missing_template_dir_is_template_error(tmp_path):
    for missing in (tmp_path / "absent", write(tmp_path, "file", HEADER)):
        with pytest.raises(TemplateError, match="does not exist or is not a folder"):
            available_templates(missing)
        with pytest.raises(TemplateError, match="does not exist or is not a folder"):
            load_template("nope", template_dir=missing)


def test_template_that_is_not_utf8_is_template_error(tmp_path):
    (tmp_path / "latin.jinja").write_bytes(HEADER.encode() + b"{% block user %}caf\xe9 {{ question }}{% endblock %}\n")
    with pytest.raises(TemplateError, match=r"template 'latin' is not valid UTF-8 \(byte 0xe9"):
        load_template("latin", template_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# `curate templates`
# --------------------------------------------------------------------------------------------

def test_templates_command_lists_good_ones_and_names_each_bad_one(tmp_path):
    write(tmp_path / "team", "good", HEADER + "{% block user %}{{ question }}{% endblock %}\n")
    write(tmp_path, "broken", HEADER + "{% block user %}\n{% if %}\n{% endblock %}\n")
    write(tmp_path, "no_parser", "{#-\ndescription: x\n-#}\n{% block user %}{{ question }}{% endblock %}\n")
    result = invoke("templates", "--template-dir", tmp_path)
    assert result.exit_code == 1, result.output
    for name in ["team/good", *BUNDLED]:
        assert name in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr
    assert "template 'broken', line 6:" in errors[0]
    assert "template 'no_parser' declares parser None" in errors[1]
    assert "Traceback" not in result.output


def test_templates_command_keeps_descriptions_readable_at_80_columns():
    """An 80-column terminal squeezed the description column of a four-column table to one word a line (cut with
    `…`): every description is printed whole, in lines of at most 80 columns, under its template's line."""
    import os
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "curate.cli", "templates"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80"}, check=True).stdout
    assert max(map(len, listed.splitlines())) <= 80
    words = " ".join(listed.split())
    for name in BUNDLED:
        loaded = load_template(name)
        parser = loaded.parser.name if loaded.parser else f"({loaded.kind})"
        assert re.search(rf"^{re.escape(name)} +{re.escape(parser)} +{loaded.content_hash}$", listed, re.M), name
        assert " ".join(loaded.description.split()) in words, name


def test_templates_command_with_one_bad_template_is_one_error_line(tmp_path):
    write(tmp_path, "broken", HEADER + "{% block user %}\n{% if %}\n{% endblock %}\n")
    result = invoke("templates", "--template-dir", tmp_path)
    assert_one_line_error(result, "template 'broken', line 6:")
    assert "difficulty/intensity_score_only" in result.stdout


def test_extends_is_refused_at_load_time(tmp_path):
    (tmp_path / "child.jinja").write_text('{#-\nparser: score_only\n-#}\n{% extends "difficulty/intensity.jinja" %}\n'
                                          "{% block user %}{{ question }}{% endblock %}\n")
    with pytest.raises(TemplateError, match="extends"):
        load_template("child", template_dir=tmp_path)


def test_identity_covers_included_templates(tmp_path):
    """Defect 19: an {% include %}d template could change under a resumed run without changing its identity."""
    (tmp_path / "judge.jinja").write_text('{#- \nparser: score_only\n-#}\n{% block user %}{% include "part.jinja" %}'
                                          "{{ question }}{% endblock %}")
    (tmp_path / "part.jinja").write_text("Rate this: ")
    before = load_template("judge", tmp_path)
    (tmp_path / "part.jinja").write_text("Rate this problem: ")
    after = load_template("judge", tmp_path)
    assert before.identity != after.identity
    assert after.render({"id": "a", "question": "1+1?"})[0]["content"] == "Rate this problem: 1+1?"


def test_identity_of_a_template_without_includes_is_the_hash_of_its_bytes():
    template = load_template("difficulty/intensity")
    assert template.content_hash == hashlib.sha256(template.source.encode()).hexdigest()[:16]


def test_an_include_chosen_while_rendering_is_refused(tmp_path):
    (tmp_path / "judge.jinja").write_text('{#- \nparser: score_only\n-#}\n{% block user %}{% include domain ~ ".jinja" %}'
                                          "{{ question }}{% endblock %}")
    with pytest.raises(TemplateError, match="chosen while rendering"):
        load_template("judge", tmp_path)


def test_a_prefill_ends_the_messages_with_the_start_of_the_answer(tmp_path):
    path = tmp_path / "prefilled.jinja"
    path.write_text('{#-\nparser: score_only\nprefill: "The reasoning intensity is "\n-#}\n'
                    "{% block system %}Rate it.{% endblock %}{% block user %}{{ question }}{% endblock %}\n")
    template = load_template(str(path))
    assert template.prefill == "The reasoning intensity is "  # the trailing space kept: it decides the next token
    assert template.render({"id": "q", "question": "2 + 2?"}) == [
        {"role": "system", "content": "Rate it."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "The reasoning intensity is "}]
    unprefilled = tmp_path / "plain.jinja"
    unprefilled.write_text(path.read_text().replace('prefill: "The reasoning intensity is "\n', ""))
    assert load_template(str(unprefilled)).identity != template.identity
    assert [m["role"] for m in load_template(str(unprefilled)).render({"id": "q", "question": "x"})] == ["system", "user"]


@pytest.mark.parametrize("value", ['" "', "[a]", "3"])
def test_a_prefill_must_be_some_text(tmp_path, value):
    path = tmp_path / "bad.jinja"
    path.write_text(f"{{#-\nparser: score_only\nprefill: {value}\n-#}}\n{{% block user %}}{{{{ question }}}}{{% endblock %}}\n")
    with pytest.raises(TemplateError, match="prefill must be a string with some text"):
        load_template(str(path))
