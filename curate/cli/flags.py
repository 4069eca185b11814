"""A command's flags, made from its config dataclass (curate.settings): one flag per setting, with its field's help
and default, for every command of `curate` and `dereason-train`.

`learning_rate: float` becomes `--learning-rate <float>`; a bool `--lora/--no-lora`; a Literal shows its choices
(`--endpoint <chat|completions>`; the config checks the value, so a wrong one is a one-line error like any other); a
list (`heldout`) is a repeatable `--heldout`; a mapping (`trainer_args`) a repeatable `--trainer-arg KEY=VALUE` whose
VALUE is read as YAML (`--trainer-arg optim=adafactor`). Help shows every default whole: a value as it is, a bool
as on or off, an unset one as what unset means ("not set" unless the field says). A flag's default is the field's
(the command's, where it differs); the config is built from what was given, `--config FILE` (the same keys, in YAML)
first and the flags given on the command line over it, so a default never hides a value of the file.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
import yaml

from curate.cli.common import errors
from curate.errors import ConfigError
from curate.settings import Setting, from_flat, read_job_file, settings_of

CONFIG = "config"


def key_values(flag: str, pairs: list[str]) -> dict[str, Any]:
    """A repeatable KEY=VALUE flag's values as a mapping, each VALUE read as YAML (`2`, `true`, `[a, b]`)."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed


def _base(hint: Any) -> Any:
    """`X | None` → X."""
    if get_origin(hint) in (Union, types.UnionType):
        return next(arm for arm in get_args(hint) if arm is not type(None))
    return hint


def is_mapping(setting: Setting) -> bool:
    return (get_origin(_base(setting.hint)) or _base(setting.hint)) is dict


def flag_name(key: str, setting: Setting) -> str:
    """The flag of a setting: a mapping's is singular (`trainer_args` → `--trainer-arg`), each use one KEY=VALUE."""
    name = "--" + key.replace("_", "-")
    return name.removesuffix("s") if is_mapping(setting) else name


def flag_default(setting: Setting, command: str | None) -> Any:
    """What the flag's default is: the command's default; a mapping's is no pair; None where it must be given."""
    default = setting.default(command)
    if default is MISSING:
        return None
    return [f"{key}={value}" for key, value in default.items()] if is_mapping(setting) else default


def _shown(setting: Setting, default: Any) -> str:
    """The default as help shows it, whole."""
    if default is MISSING:
        return f"[default: {setting.unset}]" if setting.unset else "[required]"
    if default is None:
        return f"[default: {setting.unset or 'not set'}]"
    if isinstance(default, bool):
        return f"[default: {'on' if default else 'off'}]"
    if isinstance(default, dict | list):
        shown = ", ".join(f"{k}={v}" for k, v in default.items()) if isinstance(default, dict) else ", ".join(default)
        return f"[default: {shown or setting.unset or 'none'}]"
    return f"[default: {default}]"


def _parameter(key: str, setting: Setting, command: str | None, argument: str | None) -> inspect.Parameter:
    kind, default = _base(setting.hint), setting.default(command)
    metavar, extra = None, ""
    decls: tuple[str, ...] = (flag_name(key, setting),)
    if kind is bool:
        decls = (f"{decls[0]}/--no-{decls[0][2:]}",)
    elif get_origin(kind) is list:
        kind, metavar, extra = list[str], "<str>", " Repeatable."
    elif is_mapping(setting):
        kind, metavar, extra = list[str], "<KEY=VALUE>", " Repeatable; each VALUE is read as YAML."
    elif get_origin(kind) is Literal:
        kind, metavar = str, "<" + "|".join(map(str, get_args(kind))) + ">"
    if argument is not None:
        info = typer.Argument(metavar=argument, help=setting.help, show_default=False)
    else:
        info = typer.Option(*decls, metavar=metavar, help=f"{setting.help}{extra}  {_shown(setting, default)}",
                            show_default=False)
    optional = default is MISSING or default is None or kind == list[str]
    return inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=flag_default(setting, command),
                             annotation=Annotated[kind | None if optional else kind, info])


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter `name` was given (not its default); by name, as typer ships its own copy of click."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def command_settings(cls: type, command: str | None) -> dict[str, Setting]:
    """The settings of `cls` that `command` takes: its flags, in field order."""
    return {key: setting for key, setting in settings_of(cls).items() if setting.taken_by(command)}


def settings_command(cls: type, *, command: str | None = None, arguments: Mapping[str, str] | None = None,
                     prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Callable[..., Any]:
    """Decorate `function(..., settings)`: the command takes the function's own parameters (what an invocation
    does: where it writes, --json), `--config FILE` and a flag per setting of `cls` that `command` takes (a
    config several commands share names the command); `arguments` makes settings positional (`{"source":
    "DATA"}`). The function gets the config, built from the flags given over the file's keys, over the command's
    own defaults, after `prepare` (which may fill in or refuse settings); a mistake is one error line."""
    taken = command_settings(cls, command)
    arguments = dict(arguments or {})
    own_defaults = {key: default for key, setting in taken.items()
                    if (default := setting.default(command)) is not MISSING and default != setting.default()}

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(function, eval_str=True).parameters.items() if name != "settings"]
        config_option = inspect.Parameter(CONFIG, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Path | None, typer.Option("--config", help="YAML file of settings, each keyed by its flag's name "
                                                       "(max_tokens: 64 for --max-tokens 64); flags given here win.")])
        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        flags = [_parameter(key, setting, command, arguments.get(key)) for key, setting in taken.items()]
        positional = [flag for flag in flags if flag.name in arguments]
        parameters = [context, *positional, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own),
                      config_option, *(flag for flag in flags if flag.name not in arguments)]

        def run(ctx: typer.Context, **values: Any) -> Any:
            mine = {p.name: values.pop(p.name) for p in own}
            config_file = values.pop(CONFIG)
            with errors():
                given = {key: key_values(flag_name(key, taken[key]), value) if is_mapping(taken[key]) else value
                         for key, value in values.items() if _given(ctx, key)}
                flat = {**own_defaults, **(read_job_file(config_file) if config_file else {}), **given}
                settings = from_flat(cls, prepare(flat) if prepare else flat,
                                     f"--config {config_file}" if config_file else None)
            return function(**mine, settings=settings)

        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(run, name, getattr(function, name))
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        run.settings = (cls, command)  # type: ignore[attr-defined]  # what the flags are made from, for tests
        return run

    return decorate
