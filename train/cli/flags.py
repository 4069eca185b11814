"""A stage command's flags, made from its config dataclass: one flag per field, with the field's help.

`learning_rate: float` becomes `--learning-rate FLOAT`; a bool `--lora/--no-lora`; a list (`heldout`) a
repeatable `--heldout PATH`; a mapping (`trainer_args`) a repeatable `--trainer-arg KEY=VALUE` whose VALUE is
read as YAML (`--trainer-arg optim=adafactor`). Every flag
defaults to "not given", so `--config FILE` (the same keys, in YAML) fills the rest and a flag given wins.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import typer

from curate.cli.common import errors, key_values


def _base(hint: Any) -> Any:
    """`X | None` → X."""
    if get_origin(hint) in (Union, types.UnionType):
        return next(arm for arm in get_args(hint) if arm is not type(None))
    return hint


def _default(field: Field) -> str:
    if field.default is not MISSING:
        return "" if field.default is None else f" Default: {field.default}."
    return "" if field.default_factory is not MISSING else " Required."


def _flag(field: Field, hint: Any) -> tuple[Any, typer.models.OptionInfo]:
    name = field.name.replace("_", "-")
    text = field.metadata.get("help", "") + _default(field)
    kind = _base(hint)
    if kind is bool:
        return bool | None, typer.Option(f"--{name}/--no-{name}", help=text, show_default=False)
    if get_origin(kind) is list:
        return list[str] | None, typer.Option(f"--{name}", help=text + " Repeatable.", show_default=False)
    if get_origin(kind) is dict or kind is dict:
        return list[str] | None, typer.Option(f"--{name.removesuffix('s')}", help=text + " Repeatable: KEY=VALUE.",
                                              show_default=False)
    return kind | None, typer.Option(f"--{name}", help=text, show_default=False)



def config_command(cls: type, run: Callable[[dict[str, Any], Path | None], None], name: str,
                   doc: str) -> Callable[..., None]:
    """A typer command with a flag per field of `cls`, plus --config; `run(flags_given, config_file)` runs inside
    curate's `errors()`, so that dereason's errors and the OS's end as one line."""
    hints = get_type_hints(cls)
    mappings = {f.name for f in fields(cls) if get_origin(_base(hints[f.name])) is dict}
    parameters = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; its keys mirror these flags, and flags "
                                                   "given here win.")])]
    for field in fields(cls):
        kind, option = _flag(field, hints[field.name])
        parameters.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind, option]))

    def command(config: Path | None = None, **given: Any) -> None:
        with errors():
            flags = {key: key_values(f"--{key.replace('_', '-').removesuffix('s')}", value) if key in mappings else value
                     for key, value in given.items() if value is not None}
            run(flags, config)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__name__, command.__doc__ = name, doc
    return command
