"""Settings, declared once: frozen dataclasses whose fields carry their help, read from flat mappings.

Every setting of a `curate` or `dereason-train` command is a field of a frozen dataclass that validates itself and
is never rewritten. `described(text, ...)` declares one: its help is the help of its flag (curate.cli.flags makes
the flags from the fields) and the meaning of the same key in a YAML job file, a `--config` file or a recipe.

A field whose type is itself such a dataclass is a section: its fields are keys of the same flat mapping, so a
job file names each setting by its field name wherever it sits (RunConfig's `sampling.samples` is the key
`samples` and the flag `--samples`). `from_flat` builds a config from a flat mapping, refusing unknown keys (naming
the valid ones), values of the wrong type and missing settings by name; `to_flat` gives the mapping back, which is
what a run manifest records.
"""

from __future__ import annotations

import copy
import functools
import re
import types
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from curate.errors import ConfigError

Config = TypeVar("Config")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping",
               list: "a list", type(None): "empty (null)"}


def described(text: str, *, commands: tuple[str, ...] | None = None, defaults: Mapping[str, Any] | None = None,
              unset: str | None = None, **kwargs: Any) -> Any:
    """A field with its help `text`. For a config that several commands share: `commands` names the only ones that
    take the field (or section), `defaults` the commands whose default differs from the field's (MISSING: that
    command needs it given). `unset`: what leaving the field unset means, shown in help as its default."""
    metadata = {"help": text, "commands": commands, "defaults": dict(defaults or {}), "unset": unset}
    return field(metadata=metadata, **kwargs)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and is_dataclass(hint)


@dataclass(frozen=True)
class Setting:
    """One flat key of a config: its field, its type, and the section fields on the way to it."""

    field: Field
    hint: Any
    sections: tuple[Field, ...]

    @property
    def help(self) -> str:
        return self.field.metadata.get("help", "")

    @property
    def unset(self) -> str | None:
        return self.field.metadata.get("unset")

    def taken_by(self, command: str | None) -> bool:
        """Whether `command` takes this setting (every config's own command takes all of its settings)."""
        return command is None or all(part.metadata.get("commands") in (None, ()) or
                                      command in part.metadata["commands"] for part in (*self.sections, self.field))

    def default(self, command: str | None = None) -> Any:
        """The default (`command`'s, where it differs); MISSING when the setting must be given."""
        own = self.field.metadata.get("defaults") or {}
        if command in own:
            return own[command]
        if self.field.default_factory is not MISSING:
            return self.field.default_factory()
        return self.field.default


@functools.cache
def settings_of(cls: type) -> dict[str, Setting]:
    """Every flat key of `cls`, in field order, a section's keys where the section is."""
    found: dict[str, Setting] = {}

    def walk(of: type, sections: tuple[Field, ...]) -> None:
        hints = get_type_hints(of)
        for each in fields(of):
            if is_section(hints[each.name]):
                walk(hints[each.name], (*sections, each))
                continue
            if each.name in found:
                raise TypeError(f"{cls.__name__}: two settings are named {each.name!r}")
            found[each.name] = Setting(each, hints[each.name], sections)

    walk(cls, ())
    return found


def _arms(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)


def _accepts(hint: Any, value: Any) -> bool:
    if get_origin(hint) in (Union, types.UnionType):
        return any(_accepts(arm, value) for arm in get_args(hint))
    if get_origin(hint) is Literal:
        return value in get_args(hint)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, get_origin(hint) or hint)


def _describe(hint: Any) -> str:
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in get_args(hint))
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    return _TYPE_NAMES.get(get_origin(hint) or hint, getattr(hint, "__name__", str(hint)))


def check_type(key: str, value: Any, hint: Any) -> None:
    """Name the setting whose value has the wrong type (a job file says `samples: three`)."""
    check(_accepts(hint, value), f"setting {key!r} must be {_describe(hint)}, got {value!r} "
                                  f"({type(value).__name__})")


def _coerced(value: Any, hint: Any) -> Any:
    """YAML reads `1e-5` as text (YAML 1.1 wants `1.0e-5`): a float setting takes it as the number it spells. A
    list setting given one value takes it as a list of one."""
    if isinstance(value, str) and float in _arms(hint) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, str) and any(get_origin(arm) is list for arm in _arms(hint)):
        return [value]
    return value


def from_flat(cls: type[Config], values: Mapping[str, Any], where: str | None = None) -> Config:
    """A `cls` from a flat mapping of its settings (module docstring); ConfigError naming the key, and `where` the
    mapping came from when given."""
    try:
        settings = settings_of(cls)
        unknown = sorted(set(values) - set(settings))
        check(not unknown, f"unknown setting(s) {unknown}; valid settings: {sorted(settings)}")
        values = {key: _coerced(value, settings[key].hint) for key, value in values.items()}
        for key, value in values.items():
            check_type(key, value, settings[key].hint)
        missing = [key for key, setting in settings.items() if key not in values and setting.default() is MISSING]
        check(not missing, f"missing setting(s) {missing}: give each as its flag (--{missing[0].replace('_', '-')}) "
                           "or as a key of the --config file or recipe" if missing else "")
        return _built(cls, values)
    except ConfigError as exc:
        if where is None:
            raise
        raise ConfigError(f"{where}: {exc}") from None


def _built(cls: type[Config], values: Mapping[str, Any]) -> Config:
    hints = get_type_hints(cls)
    given = {each.name: _built(hints[each.name], values) if is_section(hints[each.name]) else values[each.name]
             for each in fields(cls) if is_section(hints[each.name]) or each.name in values}
    return cls(**given)


def to_flat(config: Any) -> dict[str, Any]:
    """The flat mapping `from_flat` reads, of every setting of `config` (copies of its lists and mappings)."""
    flat: dict[str, Any] = {}
    for each in fields(config):
        value = getattr(config, each.name)
        if is_section(type(value)):
            flat.update(to_flat(value))
        else:
            flat[each.name] = copy.deepcopy(value)
    return flat


def read_job_file(path: str | Path) -> dict[str, Any]:
    """A YAML job file: a flat mapping of the same settings the flags take (a key may be spelt with - or _)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read job file {path}: {exc}") from exc
    check(isinstance(loaded, dict), f"job file {path} must hold a mapping of settings, got {type(loaded).__name__}")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}
