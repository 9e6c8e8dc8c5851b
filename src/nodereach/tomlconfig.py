"""Typed TOML configuration files: read a file, convert it to a msgspec Struct with strict types (no "yes"
for a boolean, no "10" for a number) and unknown keys refused, and turn every mistake into one line that names
the file, the key and what is expected.

    [dialback]
    address_burst = "many"    ->  serve.toml: key dialback.address_burst: expected float, got str
"""

from __future__ import annotations

import json
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from nodereach.errors import UsageError

T = TypeVar("T")

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>.*)`$", re.S)
"""The name runs to the last backtick: a key may hold backticks and newlines itself (hypothesis found "\n`")."""
_TYPES = re.compile(r"`([^`]*)`")


def read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def convert(data: Mapping[str, Any], into: type[T], source: str) -> T:
    """`data` as `into` (a msgspec Struct), or UsageError: '<source>: key a.b: expected int, got str'."""
    try:
        return msgspec.convert(data, into, strict=True)
    except msgspec.ValidationError as exc:
        raise _usage_error(str(exc), into, source) from None


def load(path: Path, into: type[T]) -> T:
    return convert(read(path), into, str(path))


def _usage_error(message: str, into: type[Any], source: str) -> UsageError:
    m = _AT.match(message)
    assert m is not None  # the pattern matches any text
    what, path = m["what"], (m["path"] or "").lstrip(".")
    unknown = _UNKNOWN.match(what)
    if unknown:
        name = _toml_key(unknown["name"])
        key = f"{path}.{name}" if path else name
        known = _keys_at(into, path)
        table = f"[{path}]" if path else "the top level"
        return UsageError(f"{source}: unknown key {key}",
                          f"known keys in {table}: {', '.join(known)}" if known else None)
    # msgspec speaks JSON ("object", "enum"); the file is TOML
    what = what[:1].lower() + what[1:]
    what = _TYPES.sub(r"\1", what).replace("object", "table").replace("invalid enum value", "invalid value")
    what = what.replace(" | null", "")  # TOML has no null: an optional key is simply left out
    choices = _choices(_type_at(into, path))
    hint = f"use one of: {', '.join(map(repr, choices))}" if choices else None
    return UsageError(f"{source}: key {path}: {what}" if path else f"{source}: {what}", hint)


def _toml_key(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (a hostile key stays one short line)."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name):
        return name
    return json.dumps(name[:60] + ("..." if len(name) > 60 else ""))


def _type_at(into: type[Any], path: str) -> Any:
    """The type of the value at a dotted key path (list indices skipped), None if there is none."""
    typ: Any = into
    for part in filter(None, re.sub(r"\[\d+\]", "", path).split(".")):
        fields = {f.encode_name: f.type for f in _fields(typ)}
        if part not in fields:
            return None
        typ = fields[part]
    return typ


def _keys_at(into: type[Any], path: str) -> list[str]:
    return sorted(f.encode_name for f in _fields(_type_at(into, path)))


def _choices(typ: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal type (also inside Optional), () for other types."""
    if typing.get_origin(typ) is Literal:
        return typing.get_args(typ)
    return tuple(c for arg in typing.get_args(typ) for c in _choices(arg))


def _fields(typ: Any) -> tuple[msgspec.structs.FieldInfo, ...]:
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        return msgspec.structs.fields(typ)
    return ()
