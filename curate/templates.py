"""Templates: sandboxed Jinja files that render chat messages and say what kind of answer they ask for.

A template is a `.jinja` file whose first thing is a Jinja comment holding YAML metadata, then a
`user` block and optionally a `system` block:

    {#-
    parser: tagged_score        # a judge template's parser, a name in curate.parse.PARSERS
    description: one line about what it asks
    prefill: "Score: "          # optional: the start of the assistant's answer, which the model continues
    -#}

A judge template (for `curate score`) declares its parser. A response template (for `curate solve`
and `curate respond`: a model answers the problem, and a verifier, not a parser, reads the answer)
declares `kind: response` instead. A verifier template (`kind: verifier`, for `--verify model`: a judge
model says whether an answer is equivalent to the reference, curate.verify.model) declares no parser
either, and sees one more variable: `answer`, the final answer read from the response. A pairwise
template (`kind: pairwise`, for `curate pairs`: which of two items is harder) declares a parser of
curate.parse_choice.CHOICE_PARSERS, and sees two variables instead of one item's: `a` and `b`, the
items shown first and second, each with the fields below (`{{ a.question }}`, `{{ b.choices | format_choices }}`).
    {% block system %}...{% endblock %}
    {% block user %}Problem: {{ question }}{% endblock %}

Variables: `id`, `question`, `reference`, `choices`, `domain`, and `extra` (every other input
field). Any other name is an error (StrictUndefined), reported with the template's name and line.
`choices` is null or a list of `{label, text}` options; the filter `format_choices` renders them as
`LABEL. text` lines, exactly as the exports show them (`{{ choices | format_choices }}`).
Each block is rendered on its own, so macros and `{% set %}` belong inside the block that uses them,
and `{% extends %}` is not supported.
A prefill ends the messages with an assistant message holding it; every backend continues that
message instead of opening a new turn, so a chat model that would open with "To solve this" is put
where its next token is the score. Quote it in the YAML to keep a trailing space.
Identity: the template's name plus a hash of its exact bytes, recorded with every judgment.
Rendering is sandboxed and bounded (curate.sandbox): a render that would build more than 8 million characters or
loop more than a million times fails with the template's name and line.
"""

from __future__ import annotations

import hashlib
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2.runtime import new_context

from curate.data.choices import format_choices
from curate.errors import TemplateError
from curate.parse import PARSERS, Parser
from curate.parse_choice import CHOICE_PARSERS, LetterChoiceParser
from curate.sandbox import BoundedSandbox, bounded_render

SUFFIX = ".jinja"
ROLES = ("system", "user")
_HEADER = re.compile(r"\A\s*\{#-?(.*?)-?#\}", re.DOTALL)


def bundled_prompts_dir() -> Path:
    """`prompts/` ships inside the wheel as curate/prompts; in a source checkout it sits beside curate/."""
    package = Path(__file__).parent
    installed = package / "prompts"
    return installed if installed.is_dir() else package.parent / "prompts"


def _check_template_dir(template_dir: str | Path | None) -> None:
    if template_dir and not Path(template_dir).is_dir():
        raise TemplateError(f"template folder {str(template_dir)!r} does not exist or is not a folder "
                            "(--template-dir)")


def available_templates(template_dir: str | Path | None = None) -> list[str]:
    _check_template_dir(template_dir)
    roots = [Path(template_dir)] if template_dir else []
    roots.append(bundled_prompts_dir())
    return sorted({str(p.relative_to(root).with_suffix("")) for root in roots for p in root.rglob(f"*{SUFFIX}")})


KINDS = ("judge", "response", "verifier", "pairwise")
PARSED_KINDS = {"judge": PARSERS, "pairwise": CHOICE_PARSERS}  # the kinds whose answers a parser reads


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    source: str
    parser: Parser | LetterChoiceParser | None  # a judge or pairwise template's; None for the other kinds
    description: str
    _template: jinja2.Template
    kind: str = "judge"
    prefill: str = ""
    included: tuple[tuple[str, str], ...] = ()  # (name, source) of every template it includes or imports
    content_hash: str = field(init=False)
    identity: str = field(init=False)
    _globals: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.source.encode())
        for name, source in self.included:  # a judgment depends on what the template pulls in as well
            digest.update(f"\x1e{name}\x1f{source}".encode())
        content_hash = digest.hexdigest()[:16]
        object.__setattr__(self, "content_hash", content_hash)
        object.__setattr__(self, "identity", f"{self.name}@{content_hash}")
        # Flattened once and passed as the context's own variables: Jinja then neither layers a
        # ChainMap nor re-collects the globals' names on every render (half of a render's cost).
        object.__setattr__(self, "_globals", dict(self._template.globals))

    def render(self, item: dict[str, Any]) -> list[dict[str, str]]:
        """Chat messages for one item (a pairwise template's: for one comparison, its items `item["a"]` and
        `item["b"]`); errors name the template, the line and the item id."""
        template = self._template
        variables = {"a": _context(item["a"]), "b": _context(item["b"])} if self.kind == "pairwise" else \
            _context(item)
        context = new_context(template.environment, template.name, template.blocks,
                              {**self._globals, **variables}, shared=True)
        messages = []
        for role in ROLES:
            block = self._template.blocks.get(role)
            if block is None:
                continue
            try:
                content = bounded_render(block(context)).strip()
            except Exception as exc:  # noqa: BLE001 - Jinja errors and Python ones ({{ 1/0 }}) alike
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                raise TemplateError(f"template {self.name!r}, line {_template_line(exc, self._template)}: "
                                    f"{message} (rendering item {item.get('id')!r}); available "
                                    f"variables: {_names(variables)}") from exc
            messages.append({"role": role, "content": content})
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return messages


def _context(item: dict[str, Any]) -> dict[str, Any]:
    context = {"id": item["id"], "question": item["question"], "reference": item.get("reference"),
               "choices": item.get("choices"), "domain": item.get("domain"), "extra": item.get("extra") or {}}
    # Only a verifier template is rendered with an answer; in the others `answer` stays an undefined name.
    return {**context, "answer": item["answer"]} if "answer" in item else context


def _names(variables: dict[str, Any]) -> str:
    if set(variables) == {"a", "b"}:
        return f"a and b, each with {', '.join(variables['a'])}"
    return ", ".join(variables)


def _template_line(exc: BaseException, template: jinja2.Template) -> int | str:
    """The template line of the innermost frame of the compiled template (its debug info maps it)."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename == template.filename and frame.lineno is not None]
    return template.get_corresponding_lineno(lines[-1]) if lines else "?"


def _environment(search_path: list[Path]) -> BoundedSandbox:
    environment = BoundedSandbox(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    environment.add_filter("format_choices", format_choices)
    return environment


def load_template(name: str, template_dir: str | Path | None = None) -> JudgeTemplate:
    """Load by name (`difficulty/intensity`), searching `template_dir` first, or by path to a .jinja file."""
    as_path = Path(name)
    if name.endswith(SUFFIX) and as_path.is_file():
        search_path, file_name, display = [as_path.parent.resolve()], as_path.name, str(as_path)
    else:
        _check_template_dir(template_dir)
        search_path = ([Path(template_dir)] if template_dir else []) + [bundled_prompts_dir()]
        file_name, display = f"{name}{SUFFIX}", name
    env = _environment(search_path)
    try:
        template = env.get_template(file_name)
    except jinja2.TemplateNotFound:
        raise TemplateError(f"no template {name!r}; available: {available_templates(template_dir)}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {display!r}, line {exc.lineno}: {exc.message}") from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(f"template {display!r} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                            f"offset {exc.start}); save it as UTF-8") from None
    source = Path(template.filename).read_text(encoding="utf-8")
    metadata = _metadata(source, display)
    kind = metadata.get("kind", "judge")
    if kind not in KINDS:
        raise TemplateError(f"template {display!r} declares kind {kind!r}; declare one of {list(KINDS)} (judge by "
                            "default)")
    parser_name = metadata.get("parser")
    parsers = PARSED_KINDS.get(kind)
    if parsers is None and parser_name is not None:
        raise TemplateError(f"template {display!r} is a {kind} template, so it declares no parser (a verifier reads "
                            "a response template's answers; curate.verify.model reads a verifier template's)")
    if parsers is not None and parser_name not in parsers:
        raise TemplateError(f"template {display!r} declares parser {parser_name!r}; "
                            f"declare one of {sorted(parsers)} in its header comment"
                            + (" (or `kind: response` for a template whose answers a verifier reads)" if kind == "judge"
                               else ""))
    if re.search(r"\{%-?\s*extends\b", source):
        raise TemplateError(f"template {display!r}: {{% extends %}} is not supported (blocks render on their own); "
                            "copy the parent's blocks instead")
    if "user" not in template.blocks:
        raise TemplateError(f"template {display!r} has no {{% block user %}}; a judge template needs one")
    prefill = metadata.get("prefill", "")
    if not isinstance(prefill, str) or (prefill and not prefill.strip()):
        raise TemplateError(f"template {display!r}: prefill must be a string with some text, got {prefill!r}")
    return JudgeTemplate(name=display, source=source, parser=parsers[parser_name] if parsers else None,
                         description=str(metadata.get("description", "")), _template=template,
                         included=_included(env, source, display), prefill=prefill, kind=kind)


def _included(env: jinja2.Environment, source: str, display: str) -> tuple[tuple[str, str], ...]:
    """Every template `source` includes, imports or extends, transitively, with its source."""
    found: dict[str, str] = {}
    pending = [source]
    while pending:
        for name in jinja2.meta.find_referenced_templates(env.parse(pending.pop())):
            if name is None:
                raise TemplateError(f"template {display!r} includes a template chosen while rendering; include it "
                                    "by its literal name, so that the run's identity covers it")
            if name in found:
                continue
            try:
                found[name] = env.loader.get_source(env, name)[0]
            except jinja2.TemplateNotFound:
                raise TemplateError(f"template {display!r} includes {name!r}, which does not exist") from None
            pending.append(found[name])
    return tuple(sorted(found.items()))


def _metadata(source: str, display: str) -> dict[str, Any]:
    header = _HEADER.match(source)
    if header is None:
        raise TemplateError(f"template {display!r}, line 1: missing metadata header "
                            "(a leading {# ... #} comment with YAML, e.g. `parser: tagged_score`)")
    try:
        metadata = yaml.safe_load(header.group(1))
    except yaml.YAMLError as exc:
        raise TemplateError(f"template {display!r}: metadata header is not valid YAML: {exc}") from exc
    if not isinstance(metadata, dict):
        raise TemplateError(f"template {display!r}: metadata header must be a YAML mapping")
    return metadata
