"""The Jinja environment templates render in: sandboxed, and bounded in what one render may build and how long
it may loop, so that a template cannot exhaust the machine (`{{ "a" * 3000000000 }}`, nested loops of 10^5 × 10^5).

Jinja's sandbox already refuses unsafe attributes and methods and caps `range()` at 100,000 items. On top:
- no value a template builds and no render's output may exceed MAX_CHARS characters. Where one operation
  could build far more than its inputs hold (`*`, `+`, `**`, a width in `%`/`format`, the `center`, `indent`,
  `wordwrap`, `batch`, `slice` filters and the `ljust`-like methods, `replace`), the size is checked before it
  allocates; every filter's and call's result is checked after;
- one render may take at most MAX_LOOP_STEPS steps over all its `{% for %}` loops.
Past a bound, `BoundExceeded` is raised where the template asked for it, so the caller names the template line.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_CHARS = 8_000_000  # characters of one render, and of any string, list or digits a template builds
MAX_LOOP_STEPS = 1_000_000  # loop iterations in one render
_LOOP_FILTER = "_bounded_loop"
_SIZED = (str, list, tuple)
# Arguments that set a result's size: a width, a padding, a number of parts.
_SIZING_FILTERS = {"center", "indent", "wordwrap", "batch", "slice"}
_SIZING_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs"}
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\d+)|%[-#0 +]*\d*\.(\d+)|\{[^{}]*?(\d+)[^{}]*\}")
_steps_left: contextvars.ContextVar[list[int]] = contextvars.ContextVar("steps_left")


class BoundExceeded(Exception):
    """A render went past one of this module's bounds; the message says which and by how much."""


def _too_large(what: str, size: float) -> None:
    if size > MAX_CHARS:
        raise BoundExceeded(f"{what} would hold {size:,.0f} characters, over the bound of {MAX_CHARS:,}")


def _check_sizes(arguments: Iterable[Any], what: str) -> None:
    for value in arguments:
        if isinstance(value, int) and not isinstance(value, bool):
            _too_large(what, abs(value))


def _check_format(template: Any, what: str) -> None:
    """The widths and precisions a %- or {}-format string asks for (`%999999999d`, `{:>999999999}`)."""
    if isinstance(template, str) and ("%" in template or "{" in template):
        _check_sizes((int(number) for match in _FORMAT_WIDTH.finditer(template) for number in match.groups()
                      if number), what)


def _check_replace(text: Any, old: Any, new: Any, what: str) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        _too_large(what, len(text) + (text.count(old) if old else len(text) + 1) * len(new))


def _check_binop(symbol: str, left: Any, right: Any) -> None:
    if symbol == "*":
        sequence, count = (left, right) if isinstance(left, _SIZED) else (right, left)
        if isinstance(sequence, _SIZED) and isinstance(count, int):
            _too_large(f"a {type(sequence).__name__} repeated {count:,} times", len(sequence) * count)
    elif symbol == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _too_large("a concatenation", len(left) + len(right))
    elif symbol == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _too_large(f"{left} ** {right} (in digits)", right * math.log10(abs(left)))
    elif symbol == "%":
        _check_format(left, "a %-formatted string's width")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, with the arguments that size its result checked before and its result after."""
    passes_context = getattr(function, "jinja_pass_arg", None) is not None
    what = f"the filter {name}'s result"

    @functools.wraps(function)  # keeps Jinja's pass_context / pass_eval_context mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, parameters = args[passes_context], args[passes_context + 1:]
        if name in _SIZING_FILTERS:
            _check_sizes((*parameters, *kwargs.values()), what)
        elif name == "format":
            _check_format(value, what)
        elif name == "replace" and len(parameters) >= 2:
            _check_replace(value, parameters[0], parameters[1], what)
        result = function(*args, **kwargs)
        if isinstance(result, _SIZED):
            _too_large(what, len(result))
        return result

    return bounded


def _bounded_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    steps = _steps_left.get(None)
    for item in iterable:
        if steps is not None:
            steps[0] -= 1
            if steps[0] < 0:
                raise BoundExceeded(f"the template's loops ran past {MAX_LOOP_STEPS:,} steps in one render")
        yield item


def bounded_render(parts: Iterable[str]) -> str:
    """Join a block's output, stopping once it passes MAX_CHARS; its loops count against MAX_LOOP_STEPS."""
    token = _steps_left.set([MAX_LOOP_STEPS])
    try:
        pieces, size, output = [], 0, iter(parts)
        for part in output:
            size += len(part)
            if size > MAX_CHARS:  # raised inside the block, at the template line that wrote the last part
                output.throw(BoundExceeded(f"the rendered text passed the bound of {MAX_CHARS:,} characters"))
            pieces.append(part)
        return "".join(pieces)
    finally:
        _steps_left.reset(token)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with the bounds of this module."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})  # which also keeps Jinja from folding them at load time

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, function) for name, function in self.filters.items()}
        self.filters[_LOOP_FILTER] = _bounded_loop

    def add_filter(self, name: str, function: Callable[..., Any]) -> None:
        self.filters[name] = _bounded_filter(name, function)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's names
        name = getattr(__obj, "__name__", "a function")
        target = getattr(__obj, "__self__", None)
        what = f"the result of {name}"
        if isinstance(target, str):
            if name in _SIZING_METHODS:
                _check_sizes(args, what)
            elif name in ("format", "format_map"):
                _check_format(target, what)
            elif name == "replace" and len(args) >= 2:
                _check_replace(target, args[0], args[1], what)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, _SIZED):
            _too_large(what, len(result))
        return result

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # as if written `for x in X|_bounded_loop`
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.lineno)
        return tree
