"""Where a ``--shell`` template may hold a placeholder, and how it is filled.

A value is never pasted into the shell text: each placeholder becomes a reference to
an environment variable (``"${PP_VALUE_1}"``) that holds the value, so the shell
never parses a value as code, whatever it holds. Expanding a variable is safe except
where the shell evaluates the expanded text again: arithmetic (bash evaluates
``a[$(cmd)]`` there), builtins that take code, variable names or arithmetic (eval,
trap, read, let, ``[[``, ``test -v``), and the command name (a value ``eval`` would
run the next value). A placeholder is refused in those positions, and wherever
``/bin/sh`` and bash read the text differently; inside ``$(( ))`` its values must be
decimal integers. The scanner below follows the shell's grammar as far as those
decisions need: quotes, ``$( )``, ``$(( ))``, ``${ }``, backticks, words and the
command each word belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

from . import UsageError

#: the builtins (bash's and POSIX sh's) that evaluate an argument as code, as a variable
#: name (bash evaluates a subscript in it: ``read 'a[$(cmd)]'``) or as arithmetic
EVALUATING = frozenset({
    "eval", ".", "source", "trap", "let", "alias", "declare", "typeset", "local", "export",
    "readonly", "unset", "read", "mapfile", "readarray", "getopts", "wait", "compgen",
    "complete", "enable", "fc", "bind", "[[",
})
#: words after which the next word is still the command name
KEYWORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until",
                      "!", "{", "}", "time", "esac", "function", "coproc"})
#: commands that run the next word as the command (a builtin too)
PREFIXES = frozenset({"command", "builtin", "exec"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_MARK = "\0"  # a placeholder inside a word
_REDIRECT = "\1"  # a word that is a redirection's target


class Refused(Exception):
    """Why a placeholder can't be where it is; ``placeholder`` is the one refused."""

    placeholder: object = None


@dataclass(frozen=True)
class Slot:
    """A placeholder's position: how its variable is written there, and whether the
    shell reads its value as arithmetic (then it must be an integer)."""

    quoting: str  # "word": "${V}" quoted; "bare": ${V} (already in quotes); "single": '"${V}"'
    integer: bool


@dataclass
class Frame:
    """One level of nesting: a command list (the whole text, or ``$( )``), an
    arithmetic expression, a ``${ }`` expansion, or backticks."""

    kind: str
    closer: str = ""
    quote: str = ""
    escaped: bool = False
    depth: int = 0
    words: list[str] = field(default_factory=list)
    word: str | None = None
    redirect_next: bool = False
    bracket: bool = False
    param_state: str = "name"
    name_length: int = 0
    bash_only: bool = False  # bash's (( )) command


Item = Union[str, object]  # one character, or a placeholder


class Scanner:
    """Walks the template once; ``slots[i]`` is the Slot of the placeholder at item i."""

    def __init__(self, items: Sequence[Item]) -> None:
        self.items = items
        self.stack = [Frame("cmd")]
        self.heredoc = False
        self.slots: dict[int, Slot] = {}

    def scan(self) -> dict[int, Slot]:
        index = 0
        while index < len(self.items):
            if isinstance(self.items[index], str):
                index += self.char(index)
            else:
                try:
                    self.slots[index] = self.placeholder()
                except Refused as error:
                    error.placeholder = self.items[index]
                    raise
                index += 1
        return self.slots

    def next_char(self, index: int, ahead: int = 1) -> str | None:
        at = index + ahead
        item = self.items[at] if at < len(self.items) else None
        return item if isinstance(item, str) else None

    # ------------------------------------------------------------------ characters
    def char(self, index: int) -> int:
        """Take the character at index (and what belongs to it); how many were taken."""
        frame, char = self.stack[-1], self.items[index]
        if frame.escaped:
            frame.escaped = False
        elif frame.quote in ("'", "$'") or frame.kind == "backtick":
            self.quoted_char(frame, char)
        elif char == "\\":
            frame.escaped = True
        elif char == "$" and self.opens_expansion(frame, self.next_char(index)):
            return self.dollar(index)
        elif char == "`":
            self.push(Frame("backtick"), char)
            return 1
        elif frame.quote == '"':
            frame.quote = "" if char == '"' else frame.quote
        elif char in "'\"":
            frame.quote = char
        else:
            return {"cmd": self.cmd_char, "arith": self.arith_char,
                    "param": self.param_char}[frame.kind](index)
        self.add(char)
        return 1

    def quoted_char(self, frame: Frame, char: str) -> None:
        """Single quotes end at a quote; ``$'..'`` and backticks know backslashes."""
        if char == "\\" and frame.quote != "'":
            frame.escaped = True
        elif frame.kind == "backtick" and not frame.quote and char == "`":
            self.stack.pop()
        elif char == "'" and frame.quote:
            frame.quote = ""

    @staticmethod
    def opens_expansion(frame: Frame, after: str | None) -> bool:
        """``$(``, ``${``, ``$[``; and ``$'`` outside double quotes."""
        return after in ("(", "{", "[") or (after == "'" and not frame.quote)

    def dollar(self, index: int) -> int:
        after, second = self.next_char(index), self.next_char(index, 2)
        if after == "'":
            self.add("$'")
            self.stack[-1].quote = "$'"
            return 2
        if after == "(" and second == "(":
            self.push(Frame("arith", closer="))"), "$((")
            return 3
        kinds = {"(": Frame("cmd", closer=")"), "{": Frame("param"),
                 "[": Frame("arith", closer="]")}
        self.push(kinds[after], "$" + after)
        return 2

    def push(self, frame: Frame, opener: str) -> None:
        self.add(opener)
        self.stack.append(frame)

    def add(self, text: str) -> None:
        frame = self.stack[-1]
        if frame.kind == "cmd":
            frame.word = (frame.word or "") + text

    def cmd_char(self, index: int) -> int:
        frame, char = self.stack[-1], self.items[index]
        if char == "#" and frame.word is None:
            return self.comment(index)
        if char in " \t":
            self.end_word(frame)
        elif char in "\n;&|":
            self.end_command(frame)
        elif char == "(" and self.next_char(index) == "(" and self.at_command_start():
            self.stack.append(Frame("arith", closer="))", bash_only=True))
            return 2
        elif char == "(":
            frame.depth += 1
            self.end_command(frame)
        elif char == ")":
            self.end_command(frame)
            if frame.depth == 0 and frame.closer == ")":
                self.stack.pop()
            frame.depth = max(frame.depth - 1, 0)
        elif char in "<>":
            return self.redirection(index)
        else:
            if char == "[" and self.opens_bracket(index):
                frame.bracket = True
            elif char == "]":
                frame.bracket = False
            self.add(char)
        return 1

    def at_command_start(self) -> bool:
        frame = self.stack[-1]
        return not frame.words and frame.word is None

    def opens_bracket(self, index: int) -> bool:
        """A ``[`` inside a word (a glob, or bash's subscript), not the command ``[``."""
        after = self.items[index + 1] if index + 1 < len(self.items) else None
        word = self.stack[-1].word
        return after not in (None, " ", "\t", "\n") and not (not word and after == "[")

    def redirection(self, index: int) -> int:
        frame = self.stack[-1]
        self.end_word(frame)
        taken = 1
        while self.next_char(index, taken) in ("<", ">", "&", "|", "-"):
            taken += 1
        operator = "".join(str(item) for item in self.items[index:index + taken])
        if operator.startswith("<<"):
            self.heredoc = True
        frame.redirect_next = True
        return taken

    def comment(self, index: int) -> int:
        taken = 0
        while index + taken < len(self.items) and self.items[index + taken] != "\n":
            taken += 1
        return taken

    def arith_char(self, index: int) -> int:
        frame, char = self.stack[-1], self.items[index]
        if char == "(":
            frame.depth += 1
        elif char == ")" and frame.depth:
            frame.depth -= 1
        elif char == ")" and frame.closer == "))" and self.next_char(index) == ")":
            self.stack.pop()
            return 2
        elif char == "]" and frame.closer == "]":
            self.stack.pop()
        return 1

    def param_char(self, index: int) -> int:
        """``${name<op>word}``: placeholders only in the word of -, =, ?, + (with or
        without a colon), #, ##, %, %%; not in the name, an offset or a subscript."""
        frame, char = self.stack[-1], self.items[index]
        if char == "}" and frame.depth == 0:
            self.stack.pop()
            return 1
        if char in "{}":
            frame.depth += 1 if char == "{" else -1
        if frame.param_state != "name":
            return 1
        if char == ":" and frame.name_length:
            frame.param_state = "word" if self.next_char(index) in tuple("-=?+") else "other"
            return 2 if frame.param_state == "word" else 1
        if char in "-=?+#%" and frame.name_length:
            frame.param_state = "word"
        elif char.isalnum() or char == "_" or (not frame.name_length and char in "@*#?-$0"):
            frame.name_length += 1
        else:
            frame.param_state = "other"
        return 1

    # ------------------------------------------------------------------ words
    def end_word(self, frame: Frame) -> None:
        if frame.word is not None:
            frame.words.append((_REDIRECT if frame.redirect_next else "") + frame.word)
            frame.redirect_next = False
        frame.word, frame.bracket = None, False

    def end_command(self, frame: Frame) -> None:
        self.end_word(frame)
        frame.words, frame.redirect_next = [], False

    # ------------------------------------------------------------------ placeholders
    def placeholder(self) -> Slot:
        if self.heredoc:
            raise Refused("is in a here-document or here-string (after <<), where the "
                          "shell expands what it holds")
        integer = False
        for frame in reversed(self.stack):  # the innermost reason first
            if frame.escaped:
                raise Refused("follows a backslash")
            if frame.quote == "$'":
                raise Refused("is inside $'...', which /bin/sh and bash read differently")
            if frame.kind == "backtick":
                raise Refused("is inside backticks, which parse their text twice; use $( )")
            if frame.bash_only:
                raise Refused("is inside (( )), bash's arithmetic, which evaluates a "
                              "value as an expression; use $(( ))")
            if frame.kind == "param" and frame.param_state != "word":
                raise Refused("is inside ${...} but not in the word after :-, -, :=, =, "
                              ":?, ?, :+, +, #, ##, %, %%: bash would read it as a name, "
                              "a subscript or an offset")
            integer = integer or frame.kind == "arith"
            if frame.kind == "cmd":
                check_word(frame)
        slot = Slot(self.quoting(), integer)
        self.add(_MARK)
        return slot

    def quoting(self) -> str:
        top = self.stack[-1]
        if top.quote == "'":
            return "single"
        if top.quote == '"' or top.kind == "arith":
            return "bare"
        if top.kind == "param" and self.stack[-2].quote == '"':
            return "bare"
        return "word"


def check_word(frame: Frame) -> None:
    """Refuse a placeholder in the current word of a command where the shell would
    run or evaluate the value, not pass it to a program as an argument."""
    if frame.bracket:
        raise Refused("is inside [...] in a word: a glob, or a subscript bash evaluates "
                      "as arithmetic")
    if frame.redirect_next:
        return
    command = command_index(frame.words)
    if command is None:
        if _ASSIGNMENT.match(frame.word or ""):
            raise Refused("is in an assignment: the shell may evaluate that variable "
                          "(bash's PS4, arithmetic); give the value to the program as an "
                          "argument, or through env NAME={...} program")
        raise Refused("is (in) the command name: the value would choose what runs, a "
                      "builtin like eval too; name the command yourself")
    name = frame.words[command]
    arguments = [word for word in frame.words[command + 1:] if not word.startswith(_REDIRECT)]
    if name in EVALUATING:
        raise Refused(f"is an argument of {name}, which evaluates its arguments (as code, "
                      f"as variable names or as arithmetic)")
    if name == "printf" and (not arguments or arguments[-1] == "-v"):
        raise Refused("is printf's format or follows its -v: bash takes a value there as "
                      "a variable name (or -v, making the next one a name); write the format: "
                      "printf '%s\\n' {...}")
    if name in ("test", "[") and arguments and (
            arguments[-1] in ("-v", "-R") or _MARK in arguments[-1]):
        raise Refused(f"follows {arguments[-1].replace(_MARK, '{...}')!r} in {name}, "
                      f"where bash takes it as a variable name and evaluates its subscript")


def command_index(words: Sequence[str]) -> int | None:
    """Which of a simple command's words is the command, skipping assignments,
    redirection targets, keywords and prefixes (``command``, ``exec``); None while
    the command is still to come."""
    after_prefix = False
    for index, word in enumerate(words):
        if word.startswith(_REDIRECT) or word in KEYWORDS or _ASSIGNMENT.match(word):
            continue
        if after_prefix and word.startswith("-"):
            continue
        if word in PREFIXES:
            after_prefix = True
            continue
        return index
    return None


def shell_slots(items: Sequence[Item]) -> dict[int, Slot]:
    """The Slot of each placeholder among ``items`` (characters and placeholders), or
    :class:`Refused`."""
    return Scanner(items).scan()


def variable_reference(variable: str, quoting: str) -> str:
    reference = "${" + variable + "}"
    return {"word": f'"{reference}"', "bare": reference, "single": f"'\"{reference}\"'"}[quoting]


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def is_decimal_integer(text: str) -> bool:
    """What arithmetic may take: no leading zero (the shell reads 010 as octal), no
    expression, no name (bash evaluates a name's value as an expression)."""
    return bool(_INTEGER.fullmatch(text))


def refusal(placeholder: str, reason: Refused) -> UsageError:
    return UsageError(f"--shell: the placeholder {placeholder} {reason}. Values reach the "
                      f"shell as variables and are never parsed as code; see Injection in "
                      f"docs/cli_exec.rst for where placeholders may go")
