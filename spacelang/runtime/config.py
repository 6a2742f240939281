"""Typed run configuration: frozen attrs classes read from YAML, checked by annotation.

A config class is ``@attrs.frozen(kw_only=True, field_transformer=validated)``; every
field is converted from YAML (or a ``--config-set key=value`` string) by its type
annotation (int, float, bool, str, Literal, tuples, ``X | None``, ``dict[str, T]``) and
checked by ``cls.checks[name]`` (a function ``value -> problem or None``). Mistakes are
reported as ``path:line: error: ...`` before a run starts. ``cls.renamed`` maps an old
option name to a sentence saying what replaced it, ``cls.familiar`` a name from another
tool's option files to the field it means ("did you mean"). `config_changes` lists the fields two
configs disagree on (the resume check of `spacelang.runtime.loop`).
"""

import difflib
import math
import types
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import attrs
import yaml

from spacelang.units import parse_count

__all__ = [
    "Check",
    "ConfigError",
    "Count",
    "adam_betas",
    "all_positive",
    "config_changes",
    "dump_config",
    "first_problem",
    "load_config",
    "non_negative",
    "parse_config",
    "parse_overrides",
    "positive",
    "valid_seed",
    "validated",
]

C = TypeVar("C")

_NULL_STRINGS = frozenset({"", "~", "null", "none"})
_TRUE_STRINGS = frozenset({"true", "yes", "on", "1"})
_FALSE_STRINGS = frozenset({"false", "no", "off", "0"})
_SEED_MAX = 2**32 - 1


class ConfigError(Exception):
    """A configuration problem; ``str()`` is ``source:line: error: message``."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
        related: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.key = key  # the option at fault, used to locate the error
        self.related = related  # other options involved (cross-field checks)

    def __str__(self) -> str:
        where = self.source or "config"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: error: {self.message}"


class Count(int):
    """Annotation of a field holding a positive whole count that a config may write with
    an SI suffix (``20G``, ``68e9``, ``300K``; `spacelang.units.parse_count`). Values are
    plain ints."""


# --------------------------------------------------------------------------- field checks

Check = Callable[[Any], str | None]


def positive(value: Any) -> str | None:
    """``None`` or a number > 0."""
    return None if value is None or value > 0 else f"must be > 0, got {value!r}"


def non_negative(value: Any) -> str | None:
    """``None`` or a number >= 0."""
    return None if value is None or value >= 0 else f"must be >= 0, got {value!r}"


def valid_seed(value: int) -> str | None:
    """A seed in [0, 2**32 - 1]."""
    return None if 0 <= value <= _SEED_MAX else f"must be in [0, {_SEED_MAX}], got {value!r}"


def adam_betas(value: tuple[float, float]) -> str | None:
    """Adam betas, each in [0, 1)."""
    if all(0.0 <= b < 1.0 for b in value):
        return None
    return f"must hold values in [0, 1), got {list(value)!r}"


def all_positive(value: tuple[int, ...]) -> str | None:
    """A tuple of numbers > 0."""
    return None if all(v > 0 for v in value) else f"must hold values > 0, got {list(value)!r}"


def _validate_field(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """attrs validator: check the value's type against the annotation, then its constraint."""
    if not _conforms(value, attribute.type):
        raise ConfigError(
            f"{attribute.name!r} must be {_describe(attribute.type)}, got {value!r}",
            key=attribute.name,
        )
    check = type(instance).checks.get(attribute.name)
    problem = check(value) if check is not None else None
    if problem is not None:
        raise ConfigError(f"{attribute.name!r} {problem}", key=attribute.name)


def validated(cls: type, fields: list[attrs.Attribute]) -> list[attrs.Attribute]:
    """attrs field transformer: validate every field by its annotation and ``cls.checks``.

    String annotations (``from __future__ import annotations``) are resolved first.
    """
    hints = get_type_hints(cls)
    return [f.evolve(type=hints.get(f.name, f.type), validator=_validate_field) for f in fields]


def first_problem(checks: Iterable[tuple[bool, tuple[str, ...], str]]) -> None:
    """Raise for the first ``(failed, (key, *related), message)`` that failed (cross-field)."""
    for failed, keys, message in checks:
        if failed:
            raise ConfigError(message, key=keys[0], related=keys[1:])


# --------------------------------------------------------------------------- type rules


class _ConvError(Exception):
    """A conversion failure; ``subkey`` names the offending entry of a mapping value."""

    def __init__(self, message: str, subkey: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.subkey = subkey


def _is_variadic(tp: Any) -> bool:
    """``tuple[X, ...]``: a list of any length."""
    args = get_args(tp)
    return len(args) == 2 and args[1] is Ellipsis


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _describe(tp: Any) -> str:
    """Human wording of a type annotation."""
    if _is_union(tp):
        parts = [_describe(a) for a in get_args(tp) if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in get_args(tp) else text
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin is tuple and _is_variadic(tp):
        return "a list of " + _describe(get_args(tp)[0]).removeprefix("a ").removeprefix(
            "an ") + "s"
    if origin is tuple:
        args = get_args(tp)
        words = [_describe(a).removeprefix("a ").removeprefix("an ") for a in args]
        if len(set(words)) == 1:
            return f"a list of {len(args)} {words[0]}s"
        return f"a list [{', '.join(words)}]"
    if origin is dict:
        return "a mapping of names to " + _describe(get_args(tp)[1]).removeprefix("an ") + "s"
    names = {Count: "a count such as 20G, 68e9 or 300K", int: "an integer", float: "a number",
             str: "a string", bool: "true or false"}
    return names.get(
        tp, str(tp)
    )


def _conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` already has exactly the annotated type."""
    if _is_union(tp):
        return any(_conforms(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    origin = get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(c) and value == c for c in get_args(tp))
    if origin is tuple and _is_variadic(tp):
        return isinstance(value, tuple) and all(_conforms(v, get_args(tp)[0]) for v in value)
    if origin is tuple:
        args = get_args(tp)
        return (
            isinstance(value, tuple)
            and len(value) == len(args)
            and all(_conforms(v, a) for v, a in zip(value, args, strict=True))
        )
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        return isinstance(value, dict) and all(
            _conforms(k, key_tp) and _conforms(v, val_tp) for k, v in value.items()
        )
    if tp is Count:
        return type(value) in (int, Count)
    if tp is float:
        return type(value) is float and math.isfinite(value)
    if tp in (int, bool, str):
        return type(value) is tp
    return isinstance(value, tp)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _ConvError(f"expected an integer, got {_yaml_word(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _ConvError(f"expected an integer, got {value!r} (not a whole number)")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = Decimal(text.replace("_", ""))
        except InvalidOperation:
            raise _ConvError(f"expected an integer, got {value!r}") from None
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
        raise _ConvError(f"expected an integer, got {value!r} (not a whole number)")
    raise _ConvError(f"expected an integer, got {_yaml_word(value)}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _ConvError(f"expected a number, got {_yaml_word(value)}")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise _ConvError(f"expected a number, got {value!r}") from None
    else:
        raise _ConvError(f"expected a number, got {_yaml_word(value)}")
    if not math.isfinite(result):
        raise _ConvError(f"expected a finite number, got {value!r}")
    return result


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_STRINGS:
            return True
        if word in _FALSE_STRINGS:
            return False
    raise _ConvError(f"expected true or false, got {value!r}")


def _to_literal(value: Any, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
        if isinstance(value, str) and not isinstance(choice, str) and value.strip() == str(choice):
            return choice
    message = f"expected one of {', '.join(repr(c) for c in choices)}; got {value!r}"
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    raise _ConvError(message)


def _parse_structured(value: Any) -> Any:
    """An override string for a list or mapping field, parsed as inline YAML."""
    if not isinstance(value, str):
        return value
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        raise _ConvError(f"could not parse {value!r}") from None
    if isinstance(parsed, str) and "," in parsed:
        return [part.strip() for part in parsed.split(",")]
    return parsed


def _convert(value: Any, tp: Any, *, from_string: bool = False) -> Any:
    """Convert ``value`` to annotation ``tp`` by the config rules, or raise `_ConvError`."""
    if _is_union(tp):
        args = get_args(tp)
        if type(None) in args and (
            value is None
            or (from_string and isinstance(value, str) and value.strip().lower() in _NULL_STRINGS)
        ):
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(value, option, from_string=from_string)
            except _ConvError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise _ConvError(f"expected {_describe(tp)}, got {value!r}")
    if value is None:
        raise _ConvError(f"expected {_describe(tp)}, got null")
    origin = get_origin(tp)
    if origin is Literal:
        return _to_literal(value, get_args(tp))
    if tp is bool:
        return _to_bool(value)
    if tp is Count:
        try:
            return parse_count(value)
        except ValueError as exc:
            raise _ConvError(str(exc)) from None
    if tp is int:
        return _to_int(value)
    if tp is float:
        return _to_float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _ConvError(f"expected a string, got {_yaml_word(value)} (quote it in YAML)")
    if origin is tuple and _is_variadic(tp):
        items = _parse_structured(value)
        if not isinstance(items, list | tuple):
            items = [items]  # one value stands for a list of one
        out = []
        for index, item in enumerate(items):
            try:
                out.append(_convert(item, get_args(tp)[0]))
            except _ConvError as exc:
                raise _ConvError(f"item {index}: {exc.message}") from None
        return tuple(out)
    if origin is tuple:
        args = get_args(tp)
        items = _parse_structured(value)
        if not isinstance(items, list | tuple) or len(items) != len(args):
            raise _ConvError(f"expected {_describe(tp)}, got {value!r}")
        out = []
        for index, (item, arg) in enumerate(zip(items, args, strict=True)):
            try:
                out.append(_convert(item, arg))
            except _ConvError as exc:
                raise _ConvError(f"item {index}: {exc.message}") from None
        return tuple(out)
    if origin is dict:
        key_tp, val_tp = get_args(tp)
        mapping = _parse_structured(value)
        if not isinstance(mapping, Mapping):
            raise _ConvError(f"expected {_describe(tp)}, got {value!r}")
        result = {}
        for key, item in mapping.items():
            try:
                result[_convert(key, key_tp)] = _convert(item, val_tp)
            except _ConvError as exc:
                raise _ConvError(f"entry {key!r}: {exc.message}", subkey=str(key)) from None
        return result
    raise _ConvError(f"unsupported field type {tp!r}")  # pragma: no cover - config bug


def _yaml_word(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, list):
        return f"a list {value!r}"
    if isinstance(value, dict):
        return f"a mapping {value!r}"
    return repr(value)


# --------------------------------------------------------------------------- YAML reading


@attrs.frozen
class _Entry:
    key: str
    value: Any
    line: int
    value_line: int
    sub_lines: dict[str, int]


def _read_entries(text: str, source: str) -> list[_Entry]:
    """Top-level ``key: value`` entries of a YAML mapping, with their line numbers."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(
                f"invalid YAML: {problem}",
                source=source,
                line=mark.line + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {exc}", source=source) from None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            return []  # empty document
        if not isinstance(root, yaml.MappingNode):
            kind = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
            raise ConfigError(
                f"expected a mapping of option names to values, got {kind}",
                source=source,
                line=root.start_mark.line + 1,
            )
        entries: list[_Entry] = []
        seen: dict[str, int] = {}
        for key_node, value_node in root.value:
            line = key_node.start_mark.line + 1
            try:
                key = loader.construct_object(key_node, deep=True)
                value = loader.construct_object(value_node, deep=True)
            except yaml.YAMLError as exc:
                raise ConfigError(f"invalid YAML: {exc}", source=source, line=line) from None
            if not isinstance(key, str):
                raise ConfigError(
                    f"option names must be strings, got {key!r}", source=source, line=line
                )
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} (first set on line {seen[key]})",
                    source=source,
                    line=line,
                )
            seen[key] = line
            sub_lines = {}
            if isinstance(value_node, yaml.MappingNode):
                for sub_key, _ in value_node.value:
                    if isinstance(sub_key, yaml.ScalarNode):
                        sub_lines[str(sub_key.value)] = sub_key.start_mark.line + 1
            entries.append(_Entry(key, value, line, value_node.start_mark.line + 1, sub_lines))
        return entries
    finally:
        loader.dispose()




def _unknown_key(cls: type, key: str) -> str:
    names = [f.name for f in attrs.fields(cls)]
    message = f"unknown option {key!r} for {cls.__name__}"
    renamed = getattr(cls, "renamed", {}).get(key)
    if renamed is not None:
        return f"{message}: {renamed}"
    familiar = getattr(cls, "familiar", {}).get(key)
    if familiar not in names and f"weight_{familiar or key}" in names:
        familiar = f"weight_{familiar or key}"  # e.g. lr -> weight_lr in a search config
    if familiar in names:
        return f"{message}; did you mean {familiar!r}?"
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; valid options are: {', '.join(names)}"


# --------------------------------------------------------------------------- public API


def parse_config(
    cls: type[C],
    text: str,
    *,
    source: str = "<config>",
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from YAML ``text`` (errors are reported against ``source``)."""
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs config class")
    fields = {f.name: f for f in attrs.fields(cls)}
    values: dict[str, Any] = {}
    # key -> (source, line) for locating errors raised by validators
    where: dict[str, tuple[str, int | None]] = {}

    for entry in _read_entries(text, source):
        if entry.key not in fields:
            raise ConfigError(_unknown_key(cls, entry.key), source=source, line=entry.line)
        try:
            values[entry.key] = _convert(entry.value, fields[entry.key].type)
        except _ConvError as exc:
            line = entry.sub_lines.get(exc.subkey, entry.value_line) if exc.subkey else None
            raise ConfigError(
                f"{entry.key!r}: {exc.message}", source=source, line=line or entry.value_line
            ) from None
        where[entry.key] = (source, entry.line)

    for raw_key, raw_value in (overrides or {}).items():
        key, _, sub = str(raw_key).strip().partition(".")
        override_source = f"--config-set {raw_key}={raw_value}"
        if key not in fields:
            raise ConfigError(_unknown_key(cls, key), source=override_source)
        field_type = fields[key].type
        try:
            if sub:
                if get_origin(field_type) is not dict:
                    raise _ConvError(f"{key!r} has no sub-options (got {raw_key!r})")
                current = dict(values.get(key, getattr(_defaults(cls), key)))
                current.update(_convert({sub: raw_value}, field_type, from_string=True))
                values[key] = current
            else:
                values[key] = _convert(raw_value, field_type, from_string=True)
        except _ConvError as exc:
            raise ConfigError(f"{key!r}: {exc.message}", source=override_source) from None
        where[key] = (override_source, None)

    try:
        return cls(**values)
    except ConfigError as exc:
        # Point at the option at fault, or else at a related option the user did set.
        candidates = [k for k in (exc.key, *exc.related) if k in where]
        exc_source, exc_line = where[candidates[0]] if candidates else (source, None)
        raise ConfigError(
            exc.message, source=exc_source, line=exc_line, key=exc.key, related=exc.related
        ) from None


def _defaults(cls: type[C]) -> C:
    return cls()


def load_config(
    cls: type[C],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Load ``cls`` from a YAML file (``None``: defaults), then apply ``overrides``.

    Raises `ConfigError` (``path:line: error: ...``) on any unknown key, wrong type or
    invalid value.
    """
    if path is None:
        return parse_config(cls, "", source="<defaults>", overrides=overrides)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=str(path)) from None
    return parse_config(cls, text, source=str(path), overrides=overrides)


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """Split CLI ``key=value`` strings into an overrides mapping (later items win)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {item!r}", source="--config-set")
        result[key.strip()] = value.strip()
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def dump_config(cfg: Any) -> str:
    """YAML text of a resolved config; `load_config` reads it back to an equal object."""
    data = {f.name: _plain(getattr(cfg, f.name)) for f in attrs.fields(type(cfg))}
    header = f"# {type(cfg).__name__} (resolved)\n"
    text = header + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=None, allow_unicode=True
    )
    try:
        if parse_config(type(cfg), text) == cfg:
            return text
    except ConfigError:
        pass
    # Some characters (e.g. U+0085) do not survive PyYAML's unicode output; escape them all.
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def config_changes(old: Any, new: Any, allowed: Iterable[str] = ()) -> list[str]:
    """``"name old -> new"`` for each field of two configs of one class that differs.

    Fields named in ``allowed`` are not reported.
    """
    skip = frozenset(allowed)
    changes = []
    for field in attrs.fields(type(new)):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if field.name not in skip and before != after:
            changes.append(f"{field.name} {before!r} -> {after!r}")
    return changes
