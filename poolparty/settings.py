"""What a setting is and the kinds of value it takes: the leaf of the configuration.

Backends declare their own settings (``Scheduler.settings``) with these; the
configuration layer (:mod:`poolparty.config`) collects them with the Pool's own and
resolves them. Imports nothing of poolparty, so that any module, a backend too, may
declare settings without importing the configuration (which imports the backends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ENV_PREFIX = "POOLPARTY_"


# ---------------------------------------------------------------------------- value kinds
@dataclass(frozen=True)
class Kind:
    """How a setting's value is checked in a TOML file and parsed from a variable.

    ``from_toml`` gets the file's directory, so a relative path in a file means the same
    wherever the program runs. Both raise ValueError with what was expected.
    """

    label: str
    from_toml: Callable[[Any, Path], Any]
    from_text: Callable[[str], Any]


class Expected(ValueError):
    """A value that is not what a setting takes; ``what`` says what it takes."""

    def __init__(self, what: str, value: Any) -> None:
        super().__init__(f"expected {what}, got {value!r}")
        self.what = what


def expect(condition: bool, what: str, value: Any) -> None:
    if not condition:
        raise Expected(what, value)


def _string(value: Any, base: Path | None = None) -> str:
    expect(isinstance(value, str), "a string", value)
    return value


def _path_in_file(value: Any, base: Path) -> str:
    path = Path(_string(value)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _bool_text(text: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    expect(text.strip().lower() in words, "a bool: 1/0, true/false or yes/no", text)
    return words[text.strip().lower()]


def _bool(value: Any, base: Path | None = None) -> bool:
    expect(isinstance(value, bool), "true or false", value)
    return value


def _int_at_least(minimum: int) -> Callable[[Any, Path | None], int]:
    def check(value: Any, base: Path | None = None) -> int:
        expect(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                f"an int >= {minimum}", value)
        return value
    return check


def _int_text(check: Callable[[Any], int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text.strip())
        except ValueError:
            raise ValueError(f"expected an int, got {text!r}") from None
        return check(number)
    return parse


def _number_kind(what: str, accepts: Callable[[float], bool]
                 ) -> tuple[Callable[[Any, Path | None], float], Callable[[str], float]]:
    """The two parsers (TOML value, variable's text) of a number ``accepts`` allows."""
    def from_toml(value: Any, base: Path | None = None) -> float:
        expect(isinstance(value, (int, float)) and not isinstance(value, bool)
               and value != float("inf") and accepts(value), what, value)
        return float(value)

    def from_text(text: str) -> float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"expected {what}, got {text!r}") from None
        return from_toml(number)
    return from_toml, from_text


_positive_float, _positive_float_text = _number_kind("a number > 0", lambda v: v > 0)
_float_at_least_zero, _float_at_least_zero_text = _number_kind("a number >= 0",
                                                               lambda v: v >= 0)
_factor, _factor_text = _number_kind("a number >= 1", lambda v: v >= 1)


def _int_or_string(value: Any, base: Path | None = None) -> int | str:
    expect(isinstance(value, (int, str)) and not isinstance(value, bool),
            "an int or a string (e.g. 2 or 'a100:2')", value)
    return value


def _int_or_string_text(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text


def _json_text(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"expected {what}; not valid JSON: {error}") from None


def _string_list(value: Any, base: Path | None = None) -> list[str]:
    expect(isinstance(value, list) and all(isinstance(item, str) for item in value),
            "a list of strings", value)
    return list(value)


def _string_list_text(text: str) -> list[str]:
    """A JSON list, or comma-separated (a JSON list when an argument holds a comma)."""
    if text.lstrip().startswith("["):
        value = _json_text(text, "a JSON list of strings")
        expect(isinstance(value, list) and all(isinstance(item, str) for item in value),
                "comma-separated strings or a JSON list of strings", text)
        return value
    return [item.strip() for item in text.split(",") if item.strip()]


def _table(value: Any, base: Path | None = None) -> dict[str, Any]:
    expect(isinstance(value, dict) and all(
        isinstance(item, (str, int, float)) and not isinstance(item, bool)
        for item in value.values()), "a table of strings or numbers", value)
    return dict(value)


def _table_text(text: str) -> dict[str, Any]:
    """A JSON object, or comma-separated ``key=value`` pairs."""
    if text.lstrip().startswith("{"):
        try:
            return _table(_json_text(text, "a JSON object"))
        except ValueError:
            raise ValueError(f"expected key=value,key=value or a JSON object of strings or "
                             f"numbers, got {text!r}") from None
    table = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        expect(bool(equals and key.strip()), "key=value,key=value or a JSON object", text)
        table[key.strip()] = value.strip()
    return table


def _parallel_environment(value: Any, base: Path | None = None) -> tuple[str, int]:
    expect(isinstance(value, (list, tuple)) and len(value) == 2
            and isinstance(value[0], str) and isinstance(value[1], int)
            and not isinstance(value[1], bool), "[name, slots], e.g. ['smp', 4]", value)
    return (value[0], value[1])


def _parallel_environment_text(text: str) -> tuple[str, int]:
    """``smp,4``, ``smp 4`` or a JSON list ``["smp", 4]``."""
    if text.lstrip().startswith("["):
        return _parallel_environment(_json_text(text, "a JSON list [name, slots]"))
    parts = text.replace(",", " ").split()
    expect(len(parts) == 2 and parts[1].isdigit(), "'name,slots', e.g. 'smp,4'", text)
    return (parts[0], int(parts[1]))


STRING = Kind("string", _string, _string)
PATH = Kind("path (relative: to the file's directory, or the current one)",
            _path_in_file, lambda text: str(Path(text).expanduser()))
PROGRAM = Kind("path or command name", lambda value, base: str(Path(_string(value)).expanduser()),
               lambda text: str(Path(text).expanduser()))
BOOL = Kind("bool (variable: 1/0, true/false, yes/no)", _bool, _bool_text)
POSITIVE_INT = Kind("int >= 1", _int_at_least(1), _int_text(_int_at_least(1)))
COUNT = Kind("int >= 0", _int_at_least(0), _int_text(_int_at_least(0)))
SECONDS = Kind("number > 0", _positive_float, _positive_float_text)
SECONDS_OR_ZERO = Kind("number >= 0", _float_at_least_zero, _float_at_least_zero_text)
FACTOR = Kind("number >= 1", _factor, _factor_text)
INT_OR_STRING = Kind("int or string", _int_or_string, _int_or_string_text)
STRING_LIST = Kind("list of strings (variable: comma-separated or a JSON list)",
                   _string_list, _string_list_text)
TABLE = Kind("table (variable: key=value,key=value or a JSON object)", _table, _table_text)
PARALLEL_ENVIRONMENT = Kind("[name, slots] (variable: name,slots or a JSON list)",
                            _parallel_environment, _parallel_environment_text)

# ---------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class Setting:
    """One configurable option. ``backends`` is None for a Pool option (every backend);
    otherwise the backends whose constructor takes it. A backend declares its settings
    without it: the configuration fills it in from the backend registry."""

    name: str
    kind: Kind
    default: Any
    description: str
    backends: tuple[str, ...] | None = None

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper()
