"""The command of ``poolparty exec`` with its placeholders: ``{name}``, ``{}``.

``{name}`` is a parameter's value, ``{}`` its whole line; ``{{`` and ``}}`` are literal
braces; any other brace is left as it is. Placeholders fill argv elements in place
(``--x={x}`` works).

Without ``--shell`` the argv is run directly: a value reaches the program as it is,
whatever it holds, and no shell ever sees it. With ``--shell`` the command is one shell
string in which each placeholder refers to an environment variable holding its value
(poolparty/commands/shell_template.py says where that is safe, and refuses the rest);
``${name}`` is the shell's own variable, not a placeholder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from . import UsageError
from .params import Parameter
from .shell_template import (
    Refused,
    Slot,
    is_decimal_integer,
    refusal,
    shell_slots,
    variable_reference,
)

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)?\}")
SHELL = "/bin/sh"


@dataclass(frozen=True)
class Placeholder:
    """``{name}``, or ``{}`` (name None): the parameter's line."""

    name: str | None

    def __str__(self) -> str:
        return "{" + (self.name or "") + "}"


@dataclass(frozen=True)
class ShellPlaceholder:
    """A placeholder of a --shell command: the variable that holds its value, and how
    its position reads it."""

    placeholder: Placeholder
    variable: str
    slot: Slot

    def __str__(self) -> str:
        return variable_reference(self.variable, self.slot.quoting)


Part = Union[str, Placeholder, ShellPlaceholder]


@dataclass(frozen=True)
class CommandTemplate:
    """The command: argv elements made of literal text and placeholders (``--shell``:
    a single element, the shell string)."""

    elements: tuple[tuple[Part, ...], ...]
    shell: bool

    @classmethod
    def parse(cls, command: Sequence[str], shell: bool) -> CommandTemplate:
        if not command:
            raise UsageError("no command: give it after --, e.g. -- ./a.out --x {x} {}")
        if shell:
            return cls((shell_parts(split(" ".join(command), shell=True)),), True)
        return cls(tuple(split(element, shell=False) for element in command), False)

    def placeholders(self) -> set[Placeholder]:
        return {part.placeholder if isinstance(part, ShellPlaceholder) else part
                for element in self.elements for part in element if not isinstance(part, str)}

    def shell_placeholders(self) -> list[ShellPlaceholder]:
        return [part for element in self.elements for part in element
                if isinstance(part, ShellPlaceholder)]

    def check(self, parameter: Parameter) -> None:
        """Every placeholder must have a value: checked for all tasks before submitting."""
        for placeholder in self.placeholders():
            if placeholder.name is None and parameter.line is None:
                raise UsageError(f"{parameter.origin}: {{}} stands for the parameter's line, "
                                 f"and a --grid point has none; use {{name}}")
            if placeholder.name is not None and placeholder.name not in parameter.values:
                names = ", ".join("{" + name + "}" for name in parameter.values) or "none"
                raise UsageError(f"{parameter.origin}: no value for {placeholder} (its names: "
                                 f"{names}); write {{{{ and }}}} for literal braces")
            check_passable(parameter, placeholder)
        for part in self.shell_placeholders():
            text = value_text(parameter, part.placeholder)
            if part.slot.integer and not is_decimal_integer(text):
                raise UsageError(f"{parameter.origin}: {part.placeholder} is {text!r}; inside "
                                 f"$(( )) a value must be a decimal integer (like 42 or -7, no "
                                 f"leading 0): the shell evaluates anything else as an "
                                 f"expression, and bash runs the commands in a[$(...)]")

    def argv(self, parameter: Parameter) -> list[str]:
        """The argv of one task; with --shell, ``[/bin/sh, -c, string]``, whose values
        are in :meth:`environment`."""
        if self.shell:
            return [SHELL, "-c", "".join(str(part) for part in self.elements[0])]
        return [fill(element, parameter) for element in self.elements]

    def describe(self, parameter: Parameter) -> str:
        """One task's command as a shell would run it: ``VAR=value ... /bin/sh -c ...``."""
        assignments = [f"{name}={shlex.quote(value)}"
                       for name, value in self.environment(parameter).items()]
        return " ".join([*assignments, shlex.join(self.argv(parameter))])

    def environment(self, parameter: Parameter) -> dict[str, str]:
        """The variables of a --shell command: each holds one placeholder's value."""
        return {part.variable: value_text(parameter, part.placeholder)
                for part in self.shell_placeholders()}


def split(text: str, shell: bool) -> tuple[Part, ...]:
    """Literal text and placeholders, with ``{{``/``}}`` made single braces."""
    parts: list[Part] = []
    literal, position = "", 0
    for match in _TOKEN.finditer(text):
        literal += text[position:match.start()]
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal += token[0]
        elif shell and match.start() > 0 and text[match.start() - 1] == "$":
            literal += token  # ${name}: the shell's variable
        else:
            if literal:
                parts.append(literal)
            parts.append(Placeholder(match.group(1)))
            literal = ""
    literal += text[position:]
    if literal:
        parts.append(literal)
    return tuple(parts)


def fill(parts: Sequence[Part], parameter: Parameter) -> str:
    return "".join(part if isinstance(part, str) else value_text(parameter, part)
                   for part in parts if not isinstance(part, ShellPlaceholder))


def shell_parts(parts: Sequence[Part]) -> tuple[Part, ...]:
    """The parts of a --shell command, each placeholder made a ShellPlaceholder (one
    variable per distinct placeholder), or a UsageError for a position it can't take."""
    items: list = [char for part in parts for char in (part if isinstance(part, str) else [part])]
    try:
        slots = shell_slots(items)
    except Refused as reason:
        raise refusal(str(reason.placeholder), reason) from None
    variables: dict[Placeholder, str] = {}
    result: list[Part] = []
    for index, item in enumerate(items):
        if isinstance(item, Placeholder):
            variable = variables.setdefault(item, f"PP_VALUE_{len(variables) + 1}")
            result.append(ShellPlaceholder(item, variable, slots[index]))
        elif result and isinstance(result[-1], str):
            result[-1] += item
        else:
            result.append(item)
    return tuple(result)


def check_passable(parameter: Parameter, placeholder: Placeholder) -> None:
    """A program's arguments and environment are C strings of bytes: no NUL, and text
    that can be encoded (JSON may hold a lone surrogate)."""
    text = value_text(parameter, placeholder)
    problem = "a NUL character" if "\0" in text else None
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        problem = "a character that can't be encoded (a lone surrogate)"
    if problem:
        raise UsageError(f"{parameter.origin}: the value of {placeholder} holds {problem}, "
                         f"which no program's arguments can hold")


def value_text(parameter: Parameter, placeholder: Placeholder) -> str:
    """A value as command-line text: a string as it is, anything else as JSON."""
    if placeholder.name is None:
        return parameter.line or ""
    value: Any = parameter.values[placeholder.name]
    return value if isinstance(value, str) else json.dumps(value)


