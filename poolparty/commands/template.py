"""The command of ``poolparty exec`` with its placeholders: ``{name}``, ``{}``.

``{name}`` is a parameter's value, ``{}`` its whole line; ``{{`` and ``}}`` are literal
braces; any other brace is left as it is. Placeholders fill argv elements in place
(``--x={x}`` works).

Without ``--shell`` the argv is run directly: a value reaches the program as it is,
whatever it holds, and no shell ever sees it. With ``--shell`` the command is one shell
string and every value is inserted ``shlex.quote``\\ d, as one word. So that the
quoting can't be undone, a placeholder inside quotes, after a backslash, or in a
here-document is refused; ``${name}`` is the shell's own variable, not a placeholder.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

from . import UsageError
from .params import Parameter

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)?\}")
SHELL = "/bin/sh"


@dataclass(frozen=True)
class Placeholder:
    """``{name}``, or ``{}`` (name None): the parameter's line."""

    name: str | None

    def __str__(self) -> str:
        return "{" + (self.name or "") + "}"


Part = Union[str, Placeholder]


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
            text = " ".join(command)
            check_shell_placement(text)
            return cls((split(text, shell=True),), True)
        return cls(tuple(split(element, shell=False) for element in command), False)

    def placeholders(self) -> set[Placeholder]:
        return {part for element in self.elements for part in element
                if isinstance(part, Placeholder)}

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

    def argv(self, parameter: Parameter) -> list[str]:
        """The argv of one task; with --shell, ``[/bin/sh, -c, string]``."""
        if self.shell:
            return [SHELL, "-c", fill(self.elements[0], parameter, shlex.quote)]
        return [fill(element, parameter, str) for element in self.elements]


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


def fill(parts: Sequence[Part], parameter: Parameter, quote: Callable[[str], str]) -> str:
    return "".join(
        part if isinstance(part, str) else quote(value_text(parameter, part)) for part in parts
    )


def value_text(parameter: Parameter, placeholder: Placeholder) -> str:
    """A value as command-line text: a string as it is, anything else as JSON."""
    if placeholder.name is None:
        return parameter.line or ""
    value: Any = parameter.values[placeholder.name]
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------- --shell
def check_shell_placement(text: str) -> None:
    """Refuse placeholders where shlex.quote can't protect the value.

    Inside double quotes a quoted value's ``$(...)`` would still run; after a backslash
    its opening quote would be escaped; a here-document ignores quotes.
    """
    unquoted = unquoted_positions(text)
    heredoc = _heredoc_start(text, unquoted)
    for match in _TOKEN.finditer(text):
        if match.group(0) in ("{{", "}}"):
            continue
        start = match.start()
        if start > 0 and text[start - 1] == "$":
            continue
        if not unquoted[start]:
            raise UsageError(f"--shell: the placeholder {match.group(0)} is inside quotes or "
                             f"after a backslash; leave it bare, poolparty quotes every "
                             f"value (write {{{{ and }}}} for literal braces)")
        if heredoc is not None and start > heredoc:
            raise UsageError(f"--shell: the placeholder {match.group(0)} is in a "
                             f"here-document, where quoting can't protect its value")


def unquoted_positions(text: str) -> list[bool]:
    """For each character of a shell string: is it outside quotes and not escaped?"""
    result = []
    state, escaped = "", False
    for char in text:
        result.append(not state and not escaped)
        if escaped:
            escaped = False
        elif char == "\\" and state != "'":
            escaped = True
        elif not state and char in "'\"":
            state = char
        elif state == char:
            state = ""
    return result


def _heredoc_start(text: str, unquoted: list[bool]) -> int | None:
    for match in re.finditer(r"<<", text):
        if unquoted[match.start()]:
            return match.start()
    return None
