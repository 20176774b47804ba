"""Permission policy: allow, ask and deny rules checked before every tool call.

A rule names a tool (a case-sensitive glob such as ``read_file`` or ``mcp__*``), a tool source
(``@builtin``, ``@mcp``, ``@function``, ``@subagent``) or, for a tool that runs shell commands,
one simple command (``shell(git status)``, ``shell(git *)``). A compound command is split into
the simple commands the shell would run, including those inside ``$(...)``, backquotes,
subshells, ``eval`` and ``bash -c``, and every one of them is judged: one denied part refuses
the whole call, and only the parts not already allowed are asked about.

The analysis is deliberately conservative. Syntax it does not follow (here-documents, ``case``,
arithmetic, unbalanced quotes...) makes the command *unanalysable*, which always means ask; a
wildcard never covers command substitution or a redirection that writes a file. Deny rules are a
backstop against obvious mistakes, not a sandbox: they match text, and variables are not expanded.

Everything is compiled once (rules when the policy is built, commands in a small cache), so a
decision costs microseconds. ``docs/permissions.md`` describes the format for users.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

from agent_template.errors import ConfigurationError

__all__ = [
    "DEFAULT_COMMAND_TOOLS",
    "DEFAULT_RULES",
    "Action",
    "Decision",
    "PartDecision",
    "PermissionConfigError",
    "PermissionPolicy",
    "SessionGrants",
    "split_command",
]

Action: TypeAlias = Literal["allow", "ask", "deny"]

_ACTIONS: Final[tuple[Action, ...]] = ("deny", "ask", "allow")  # most restrictive first
_SOURCES: Final = ("builtin", "function", "mcp", "subagent")

DEFAULT_COMMAND_TOOLS: Final[Mapping[str, str]] = {"shell": "command"}
"""Tools whose calls carry a shell command, and the name of the argument that holds it."""

_READ_ONLY_COMMANDS = (
    "ls *", "pwd", "cd *", "cat *", "head *", "tail *", "wc *", "grep *", "rg *", "find *",
    "which *", "echo *", "git status *", "git diff *", "git log *", "git show *",
)  # fmt: skip
_ASK_COMMANDS = (
    "find *-exec *", "find *-execdir *", "find *-ok *", "find *-okdir *", "find *-delete*",
    "find *-fprint*", "find *-fls *", "rg *--pre*", "git *--output*",
)  # fmt: skip
_DENY_COMMANDS = (
    "sudo *", "su *", "doas *",
    "rm * / *", r"rm * /\* *", "rm * ~ *", "rm * ~/ *", r"rm * ~/\* *",
    "mkfs*", "dd *of=/dev/sd*", "dd *of=/dev/nvme*", "dd *of=/dev/disk*",
)  # fmt: skip

DEFAULT_RULES: Final[Mapping[str, Any]] = {
    "default": "ask",
    "allow": [
        "@function",
        "@subagent",
        "todo_*",
        "read_file",
        "list_files",
        "glob",
        "grep",
        *(f"shell({c})" for c in _READ_ONLY_COMMANDS),
    ],
    "ask": ["write_file", "edit_file", "@mcp", *(f"shell({c})" for c in _ASK_COMMANDS)],
    "deny": [f"shell({c})" for c in _DENY_COMMANDS],
}
"""The policy used when no permissions file is configured (see docs/permissions.md)."""

_VALID_RULE = (
    "A valid rule is a tool name or glob ('read_file', 'mcp__*'), a tool source ('@builtin', "
    "'@function', '@mcp', '@subagent'), or a command rule such as 'shell(git status)' or "
    "'shell(git *)'."
)


class PermissionConfigError(ConfigurationError):
    """A permissions file or a session's rule set is not valid.

    Attributes:
        origin: where the rules came from (a file path, or a description such as "session rules").
        detail: what is wrong.
        rule: the offending rule, when one rule is at fault.
    """

    code = "invalid_permissions"

    def __init__(self, origin: str, detail: str, *, rule: str | None = None) -> None:
        self.origin = origin
        self.detail = detail
        self.rule = rule
        super().__init__(f"Permission rules in {origin}: {detail}")


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class PartDecision:
    """The verdict on one simple command of a shell call.

    Attributes:
        command: the simple command, whitespace-normalised (``npm test``).
        action: allow, ask or deny.
        reason: which rule (or the default, or a session grant) decided, in words.
        rule: the deciding rule's text, or None.
        analysed: False when the command could not be analysed; such a command is asked
            about every time and never becomes a session grant.
    """

    command: str
    action: Action
    reason: str
    rule: str | None = None
    analysed: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one tool call.

    Attributes:
        action: allow (run it), ask (a person must approve) or deny (refuse it).
        reason: a sentence for the person or the model: which rule, which part.
        rule: the deciding rule's text, or None when the default or a grant decided.
        tool: the tool's name.
        parts: for a shell command, the verdict on each simple command (wrapped commands such
            as the ``rm`` in ``nohup rm x`` appear only when denied); empty for other tools.
        to_ask: for a shell command, the simple commands that need approval, in order.
    """

    action: Action
    reason: str
    rule: str | None = None
    tool: str = ""
    parts: tuple[PartDecision, ...] = ()
    to_ask: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- shell parsing


class _Unanalysable(Exception):
    """Raised inside the parser at syntax it does not follow; the command then needs asking."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(slots=True)
class _Word:
    raw: str  # as written, line continuations removed
    value: str  # quotes removed; expansions and substitutions kept as written
    dynamic: bool  # holds an expansion or a substitution: its value is not known here
    inner: list[list[_Token]]  # the token lists of its command and process substitutions


@dataclass(slots=True)
class _Op:
    op: str  # an operator or a redirection, with its file descriptor ("2>")


_Token: TypeAlias = _Word | _Op

_MAX_DEPTH: Final = 12
# Longest first, so that '&&' is not read as two '&'.
_OPERATORS: Final = (
    *("&>>", ";;&", "<<-", "<<<"),
    *("&&", "||", ";;", ";&", "|&", "&>", ">>", ">|", ">&", "<&", "<>", "<<"),
    *(";", "&", "|", "(", ")", "<", ">", "\n"),
)
_OP_CHARS: Final = frozenset(";&|()<>\n")
_WORD_END: Final = frozenset(" \t;&|()<>\n")
_SEPARATORS: Final = frozenset({"&&", "||", ";", "&", "|", "|&", "\n"})
_HEREDOCS: Final = frozenset({"<<", "<<-"})
_CASE_OPS: Final = frozenset({";;", ";&", ";;&"})
_MARKERS: Final = ("$(", "`", "<(", ">(")
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-]")
_SAFE_PARAMETER: Final = re.compile(
    r"#?(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-])(?:\[(?:[0-9]+|[@*])\])?"
    r"(?:(?::?[-=+?]|##?|%%?|//?|\^\^?|,,?)[^$`'\"\\{}()\[\]]*)?"
)


def _at(s: str, j: int) -> int:
    """The index of the first character at or after ``j`` that is not a line continuation."""
    while s.startswith("\\\n", j):
        j += 2
    return j


def _lex(s: str, i: int, closer: str | None, depth: int) -> tuple[list[_Token], int]:
    """Tokens from ``s[i:]`` up to the end, or past the ``)`` that closes a ``$(``."""
    if depth > _MAX_DEPTH:
        raise _Unanalysable("substitutions are nested too deeply")
    tokens: list[_Token] = []
    parens = 0
    last_end = -1  # where the last word ended: a '2' right before '>' is a file descriptor
    n = len(s)
    while True:
        while i < n and (s[i] in " \t" or s.startswith("\\\n", i)):
            i += 2 if s[i] == "\\" else 1
        if i >= n:
            if closer is not None:
                raise _Unanalysable("a '$(' is not closed")
            return tokens, i
        c = s[i]
        if c == "#":
            end = s.find("\n", i)
            i = n if end < 0 else end
        elif c in _OP_CHARS and not (c in "<>" and s.startswith("(", _at(s, i + 1))):
            op = next(o for o in _OPERATORS if s.startswith(o, i))
            i += len(op)
            if op == ")":
                if closer == ")" and parens == 0:
                    return tokens, i
                parens -= 1
            elif op == "(":
                parens += 1
            last = tokens[-1] if tokens else None
            if (
                isinstance(last, _Word)
                and op[0] in "<>"
                and last_end == i - len(op)
                and last.raw.isdigit()
            ):
                tokens.pop()
                op = last.raw + op
            tokens.append(_Op(op))
        else:
            word, i = _read_word(s, i, depth)
            tokens.append(word)
            last_end = i


def _read_word(s: str, i: int, depth: int) -> tuple[_Word, int]:
    start, n = i, len(s)
    value: list[str] = []
    inner: list[list[_Token]] = []
    dynamic = False
    while i < n:
        c = s[i]
        if c == "\\":
            if not s.startswith("\n", i + 1):
                value.append(s[i + 1 : i + 2])
            i += 2
        elif c in "<>" and s.startswith("(", _at(s, i + 1)):
            begin = i
            tokens, i = _lex(s, _at(s, i + 1) + 1, ")", depth + 1)
            inner.append(tokens)
            value.append(s[begin:i])
            dynamic = True
        elif c in _WORD_END:
            break
        elif c == "'":
            end = s.find("'", i + 1)
            if end < 0:
                raise _Unanalysable("a single quote (') is not closed")
            value.append(s[i + 1 : end])
            i = end + 1
        elif c == '"':
            i, found = _read_double(s, i + 1, value, inner, depth)
            dynamic |= found
        elif c == "`":
            i = _read_backquote(s, i, value, inner, depth)
            dynamic = True
        elif c == "$":
            i, found = _read_dollar(s, i, value, inner, depth, quoted=False)
            dynamic |= found
        else:
            value.append(c)
            i += 1
    return _Word(s[start:i].replace("\\\n", ""), "".join(value), dynamic, inner), i


def _read_double(
    s: str, i: int, value: list[str], inner: list[list[_Token]], depth: int
) -> tuple[int, bool]:
    """Reads a double-quoted string after its opening quote; True when it expands something."""
    dynamic = False
    while i < len(s):
        c = s[i]
        if c == '"':
            return i + 1, dynamic
        if c == "\\":
            escaped = s[i + 1 : i + 2]
            if escaped in ("$", "`", '"', "\\", "\n"):
                value.append(escaped if escaped != "\n" else "")
                i += 2
            else:
                value.append(c)
                i += 1
        elif c == "`":
            i = _read_backquote(s, i, value, inner, depth)
            dynamic = True
        elif c == "$":
            i, found = _read_dollar(s, i, value, inner, depth, quoted=True)
            dynamic |= found
        else:
            value.append(c)
            i += 1
    raise _Unanalysable('a double quote (") is not closed')


def _read_backquote(s: str, i: int, value: list[str], inner: list[list[_Token]], depth: int) -> int:
    end = s.find("`", i + 1)
    if end < 0:
        raise _Unanalysable("a backquote (`) is not closed")
    body = s[i + 1 : end]
    if "\\" in body:  # backslashes change meaning inside backquotes; $(...) has no such rule
        raise _Unanalysable("backslashes inside backquotes are not analysed; use $(...)")
    tokens, _ = _lex(body, 0, None, depth + 1)
    inner.append(tokens)
    value.append(s[i : end + 1])
    return end + 1


def _read_dollar(
    s: str, i: int, value: list[str], inner: list[list[_Token]], depth: int, *, quoted: bool
) -> tuple[int, bool]:
    """Reads what follows a ``$``; True when it expands something."""
    j = _at(s, i + 1)
    following = s[j : j + 1]
    if following == "(":
        if s.startswith("(", _at(s, j + 1)):
            raise _Unanalysable("arithmetic expansion $((...)) is not analysed")
        tokens, end = _lex(s, j + 1, ")", depth + 1)
        inner.append(tokens)
        value.append(s[i:end].replace("\\\n", ""))
        return end, True
    if following == "{":
        end = s.find("}", j + 1)
        if end < 0:
            raise _Unanalysable("a '${' is not closed")
        if not _SAFE_PARAMETER.fullmatch(s[j + 1 : end]):
            raise _Unanalysable(f"the parameter expansion {s[i : end + 1]} is not analysed")
        value.append(s[i : end + 1])
        return end + 1, True
    if following == "'" and not quoted:
        return _read_ansi_c(s, j, value)
    if following == '"' and not quoted:
        return j, False  # $"..." is a translatable string: the double quotes are read next
    name = _NAME.match(s, j)
    if name:
        value.append("$" + name.group())
        return name.end(), True
    value.append("$")
    return i + 1, False


def _read_ansi_c(s: str, j: int, value: list[str]) -> tuple[int, bool]:
    """Reads ``$'...'``; its escapes are not decoded, so one makes the word dynamic."""
    k, text, escaped = j + 1, [], False
    while k < len(s):
        if s[k] == "\\":
            text.append(s[k : k + 2])
            escaped, k = True, k + 2
        elif s[k] == "'":
            value.append("".join(text))
            return k + 1, escaped
        else:
            text.append(s[k])
            k += 1
    raise _Unanalysable("a $'...' string is not closed")


@dataclass(slots=True)
class _Simple:
    assigns: list[_Word] = field(default_factory=list)
    words: list[_Word] = field(default_factory=list)
    redirects: list[tuple[str, _Word]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.assigns or self.words or self.redirects)

    def all_words(self) -> Iterator[_Word]:
        yield from self.assigns
        yield from self.words
        yield from (target for _, target in self.redirects)


_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
_SKIPPED: Final = frozenset(
    {"{", "}", "!", "if", "then", "elif", "else", "fi", "while", "until", "do", "done", "time"}
)
_UNANALYSED: Final = frozenset({"case", "esac", "select", "function", "coproc", "[[", "]]"})


def _group(tokens: list[_Token]) -> list[_Simple]:
    """Simple commands from tokens, each followed by those of its substitutions."""
    out: list[_Simple] = []
    current = _Simple()
    held: list[_Word] = []  # the list of a `for` loop: not a command, but substitutions run
    in_header = False
    depth = 0

    def finish() -> None:
        nonlocal current, in_header
        words = [*current.all_words(), *held]
        if not current.empty():
            out.append(current)
        for word in words:
            for inner in word.inner:
                out.extend(_group(inner))
        current, in_header = _Simple(), False
        held.clear()

    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if isinstance(token, _Op):
            op, kind = token.op, token.op.lstrip("0123456789")
            if op in _SEPARATORS:
                finish()
            elif op == "(":
                if not current.empty() or in_header:
                    raise _Unanalysable("'(' inside a command (a function definition?)")
                depth += 1
            elif op == ")":
                if depth == 0:
                    raise _Unanalysable("a ')' has no matching '('")
                finish()
                depth -= 1
            elif kind in _HEREDOCS:
                raise _Unanalysable("here-documents (<<) are not analysed")
            elif kind in _CASE_OPS:
                raise _Unanalysable(f"'{op}' (case) is not analysed")
            else:
                target = tokens[i] if i < len(tokens) else None
                if not isinstance(target, _Word) or in_header:
                    raise _Unanalysable(f"the redirection '{op}' has no file")
                current.redirects.append((op, target))
                i += 1
        elif in_header:
            if token.raw in ("do", "{"):
                in_header = False  # `for x do ...` needs no separator before its body
            else:
                held.append(token)
        elif current.empty() and token.raw in _SKIPPED:
            continue
        elif current.empty() and token.raw in _UNANALYSED:
            raise _Unanalysable(f"'{token.raw}' is not analysed")
        elif current.empty() and token.raw == "for":
            in_header = True
        elif not current.words and _ASSIGNMENT.match(token.raw):
            current.assigns.append(token)
        else:
            current.words.append(token)
    if depth:
        raise _Unanalysable("a '(' is not closed")
    finish()
    return out


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True, slots=True)
class _Part:
    display: str  # as written, whitespace-normalised: shown, asked about and granted
    allow_text: str  # what allow rules match: values, leading assignments removed
    deny_texts: tuple[str, ...]  # what deny and ask rules match: every reading of it
    writes: bool = False  # a redirection writes a file
    substitution: bool = False  # holds $(...), `...`, <(...) or >(...)
    opaque: str | None = None  # why it cannot be analysed
    deny_only: bool = False  # a wrapped command (nohup rm x -> rm x): only deny rules apply


_SHELLS: Final = frozenset({"sh", "bash", "dash", "zsh", "ksh"})
_SHELL_FLAGS: Final = frozenset("ceuxvl")
_SHELL_LONG_FLAGS: Final = frozenset({"--norc", "--noprofile", "--posix", "--login"})
_SHELL_OPTIONS: Final = frozenset({"pipefail", "errexit", "nounset", "xtrace", "verbose"})
_WRAPPERS: Final = frozenset(
    {"builtin", "command", "doas", "env", "exec", "find", "nice", "nohup", "setsid", "stdbuf"}
    | {"sudo", "time", "timeout", "watch", "xargs"}
)
_MAX_WRAPPED: Final = 8
_RISKY_VARIABLE: Final = re.compile(
    r"PATH|LD_\w*|DYLD_\w*|BASH_ENV|ENV|IFS|SHELLOPTS|BASHOPTS|PS4|PROMPT_COMMAND|\w*PAGER"
    r"|EDITOR|VISUAL|GIT_\w*|PYTHON\w*|NODE_OPTIONS|PERL5\w*|RUBY\w*|\w*_COMMAND"
)
_WRITE_OPS: Final = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_SINKS: Final = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_GLOB_NAME: Final = re.compile(r"[*?\[{]")


def _redirect(op: str, target: str) -> str:
    if op.endswith("&") and (target.isdigit() or target == "-"):
        return f"{op}{target}"
    return f"{op} {target}"


def _writes(op: str, target: _Word) -> bool:
    kind = op.lstrip("0123456789")
    if kind not in _WRITE_OPS:
        return False
    if kind == ">&" and (target.value.isdigit() or target.value == "-"):
        return False  # duplicates a file descriptor (2>&1)
    return target.dynamic or target.value not in _SINKS


def _part(simple: _Simple, *, deny_only: bool = False, opaque: str | None = None) -> _Part:
    values = [w.value or '""' for w in simple.words]
    redirects = [_redirect(op, t.value) for op, t in simple.redirects]
    display = " ".join(
        [
            *(w.raw for w in simple.assigns),
            *(w.raw for w in simple.words),
            *(_redirect(op, t.raw) for op, t in simple.redirects),
        ]
    )
    bare = " ".join([*values, *redirects])
    text = " ".join([*(w.value for w in simple.assigns), *values, *redirects])
    texts = dict.fromkeys((text, bare, display))
    if values and "/" in values[0]:  # /bin/rm is rm for deny rules
        texts[" ".join([values[0].rsplit("/", 1)[1], *values[1:], *redirects])] = None
    risky = any(
        _RISKY_VARIABLE.fullmatch(w.raw.split("=", 1)[0].rstrip("+")) for w in simple.assigns
    )
    return _Part(
        display=display,
        allow_text=text if risky or not simple.words else bare,
        deny_texts=tuple(texts),
        writes=any(_writes(op, t) for op, t in simple.redirects),
        substitution=any(m in display for m in _MARKERS),
        opaque=opaque,
        deny_only=deny_only,
    )


def _opaque(command: str, why: str) -> _Part:
    text = command.strip()
    normalised = " ".join(text.split())
    return _Part(
        text, normalised, tuple(dict.fromkeys((text, normalised))), opaque=why,
        substitution=any(m in text for m in _MARKERS),
    )  # fmt: skip


def _shell_script(args: list[_Word]) -> tuple[bool, _Word | None]:
    """For ``bash [options] -c SCRIPT``: (True, SCRIPT), or (True, None) when the options are
    not understood or the script is computed; (False, None) when it is not a ``-c`` call."""
    has_c, safe, k = False, True, 0
    while k < len(args):
        arg = args[k].value
        if args[k].dynamic:
            safe = False
        if arg in ("-o", "+o"):
            safe &= k + 1 < len(args) and args[k + 1].value in _SHELL_OPTIONS
            k += 2
        elif arg == "--":
            k += 1
            break
        elif arg.startswith("--"):
            safe &= arg in _SHELL_LONG_FLAGS
            k += 1
        elif len(arg) > 1 and arg[0] in "-+":
            has_c |= "c" in arg
            safe &= set(arg[1:]) <= _SHELL_FLAGS
            k += 1
        else:
            break
    if not has_c:
        return False, None
    if not safe or k >= len(args) or args[k].dynamic:
        return True, None
    return True, args[k]


def _nested(script: str, outer: _Simple, depth: int, deny_only: bool) -> list[_Part]:
    """The parts of a script run by ``eval`` or ``bash -c``, which stand for the outer command.

    The outer command stays a part of its own when it sets variables or redirects, since
    those change what the inner commands do (``BASH_ENV=x bash -c ...``).
    """
    try:
        inner = _parse(script, depth + 1)
    except _Unanalysable as exc:
        return [_part(outer, deny_only=deny_only, opaque=exc.why)]
    if deny_only:
        inner = [replace(p, deny_only=True) for p in inner]
    if outer.assigns or outer.redirects:
        return [_part(outer, deny_only=deny_only), *inner]
    return inner


def _wrapped(simple: _Simple, depth: int) -> list[_Part]:
    """Deny-only parts for the commands a wrapper may run: every suffix that starts with a
    word that is not an option (``timeout -s KILL 5 rm x`` -> ``KILL 5 rm x``, ``rm x``...)."""
    out: list[_Part] = []
    heads = 0
    for k in range(1, len(simple.words)):
        word = simple.words[k]
        if not word.value or word.value.startswith("-") or _ASSIGNMENT.match(word.raw):
            continue
        suffix = _Simple(words=simple.words[k:])
        out.extend(_simple_parts(suffix, depth + 1, deny_only=True, unwrap=False))
        heads += 1
        if heads == _MAX_WRAPPED:
            break
    return out


def _simple_parts(
    simple: _Simple, depth: int, *, deny_only: bool = False, unwrap: bool = True
) -> list[_Part]:
    if not simple.words:
        if simple.assigns or any(_writes(op, t) for op, t in simple.redirects):
            return [_part(simple, deny_only=deny_only)]
        return []  # `< file` alone runs nothing
    name, args = simple.words[0], simple.words[1:]
    if name.dynamic or (name.value != "[" and _GLOB_NAME.search(name.value)):
        why = "the command name is computed (an expansion or a pattern)"
        return [_part(simple, deny_only=deny_only, opaque=why)]
    base = name.value.rsplit("/", 1)[-1]
    if base == "eval" and args:
        if any(a.dynamic for a in args):
            return [_part(simple, deny_only=deny_only, opaque="eval of a computed string")]
        return _nested(" ".join(a.value for a in args), simple, depth, deny_only)
    if base in _SHELLS:
        is_c, script = _shell_script(args)
        if is_c and script is None:
            why = f"'{base} -c' with a computed script or other options is not analysed"
            return [_part(simple, deny_only=deny_only, opaque=why)]
        if script is not None:
            return _nested(script.value, simple, depth, deny_only)
    parts = [_part(simple, deny_only=deny_only)]
    if unwrap and base in _WRAPPERS:
        parts.extend(_wrapped(simple, depth))
    return parts


def _parse(command: str, depth: int) -> list[_Part]:
    tokens, _ = _lex(command, 0, None, depth)
    return [part for simple in _group(tokens) for part in _simple_parts(simple, depth)]


def _analyse(command: str) -> tuple[tuple[_Part, ...], bool]:
    """The parts of a command, from a small cache: agents run the same commands again."""
    if len(command) > _CACHED_LENGTH:
        return _analyse_now(command)
    return _analyse_cached(command)


def _analyse_now(command: str) -> tuple[tuple[_Part, ...], bool]:
    """The parts of a command, and whether it holds a substitution marker anywhere.

    The marker test reads the raw text, quotes and comments included, so that no lexing
    subtlety can let a wildcard rule cover a command substitution.
    """
    flat = command.replace("\\\n", "")
    gated = any(m in flat for m in _MARKERS)
    try:
        return tuple(_parse(command, 0)), gated
    except _Unanalysable as exc:
        return (_opaque(command, exc.why),), gated
    except RecursionError:
        return (_opaque(command, "the command is nested too deeply"),), gated


_CACHED_LENGTH: Final = 4096
_analyse_cached = functools.lru_cache(maxsize=512)(_analyse_now)


def split_command(command: str) -> list[str]:
    """The simple commands a shell would run for ``command``, in order.

    Substitutions, subshells, groups, ``eval`` and ``sh -c`` scripts are opened, so
    ``echo $(date) && (cd x; ls)`` gives ``['echo $(date)', 'date', 'cd x', 'ls']``. A command
    that cannot be analysed (an unbalanced quote, a here-document...) comes back whole, as one
    item. Never raises.
    """
    parts, _ = _analyse(command)
    return [part.display for part in parts if not part.deny_only]


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A command pattern: ``*`` matches anything (``\\*`` is a literal star), and a trailing
    `` *`` also matches nothing, so ``git *`` covers ``git`` too."""

    text: str
    regex: re.Pattern[str]
    wildcard: bool
    redirects: bool  # mentions '>': may cover a command that writes a file

    @classmethod
    def compile(cls, pattern: str) -> _Pattern:
        text = " ".join(pattern.split())
        body, tail = (text[:-2], "(?: .*)?") if text.endswith(" *") else (text, "")
        pieces = re.findall(r"\\\*|\*|[^*\\]+|\\", body)
        regex = "".join(
            ".*" if p == "*" else re.escape("*") if p == "\\*" else re.escape(p) for p in pieces
        )
        wildcard = bool(tail) or "*" in pieces
        return cls(text, re.compile(regex + tail, re.DOTALL), wildcard, ">" in text)

    def matches(self, text: str) -> bool:
        return self.regex.fullmatch(text) is not None

    def blocker(self, part: _Part, gated: bool) -> str | None:
        """Why this pattern, which matches ``part``, may still not allow it; None if it may."""
        if self.wildcard and (gated or part.substitution):
            return "a wildcard does not cover command substitution"
        if part.writes and not self.redirects:
            return "it does not cover writing to a file with '>'"
        return None


@dataclass(frozen=True, slots=True)
class _Rule:
    text: str
    origin: str
    tool: re.Pattern[str] | None  # None for a source rule
    source: str | None
    command: _Pattern | None

    def covers(self, tool: str, source: str) -> bool:
        if self.tool is None:
            return source == self.source
        return self.tool.fullmatch(tool) is not None

    def matches_any(self, texts: Iterable[str]) -> bool:
        return self.command is None or any(self.command.matches(t) for t in texts)

    def describe(self) -> str:
        return f"rule '{self.text}' ({self.origin})"


_RULE_SHAPE: Final = re.compile(r"([^\s()]+)(?:\((.*)\))?", re.DOTALL)


def _rule_problem(text: str) -> str:
    if not text:
        return "it is empty"
    if "(" in text and not text.endswith(")"):
        return "its '(' has no ')' at the end"
    return "a tool name cannot contain spaces or parentheses"


def _parse_rule(raw: object, action: str, origin: str, command_tools: Mapping[str, str]) -> _Rule:
    def fail(why: str) -> PermissionConfigError:
        return PermissionConfigError(
            origin, f"rule {raw!r} in {action!r} is not valid: {why}. {_VALID_RULE}", rule=str(raw)
        )

    if not isinstance(raw, str):
        raise fail("a rule is a string")
    text = raw.strip()
    shape = _RULE_SHAPE.fullmatch(text)
    if shape is None:
        raise fail(_rule_problem(text))
    name, command = shape.group(1), shape.group(2)
    if command is not None and not command.strip():
        raise fail("the command pattern in parentheses is empty")
    if name.startswith("@"):
        if name[1:] not in _SOURCES:
            raise fail(f"'{name}' is not a tool source")
        if command is not None:
            raise fail("a source rule takes no command pattern")
        return _Rule(text, origin, None, name[1:], None)
    if command is not None and not any(fnmatch.fnmatchcase(t, name) for t in command_tools):
        tools = ", ".join(sorted(command_tools)) or "none are configured"
        raise fail(f"only the command tools take a command pattern ({tools})")
    pattern = _Pattern.compile(command) if command is not None else None
    return _Rule(text, origin, re.compile(fnmatch.translate(name)), None, pattern)


@dataclass(frozen=True, slots=True)
class _RuleSet:
    origin: str
    default: Action | None
    rules: tuple[tuple[_Rule, ...], tuple[_Rule, ...], tuple[_Rule, ...]]  # deny, ask, allow


def _rule_set(
    data: object, origin: str, command_tools: Mapping[str, str], *, base: bool
) -> _RuleSet:
    keys = '"default", "allow", "ask" and "deny"'
    if not isinstance(data, Mapping):
        raise PermissionConfigError(origin, f"the rules must be a JSON object with the keys {keys}")
    for key in data:
        if key not in ("default", *_ACTIONS) and not str(key).startswith(("_", "$")):
            raise PermissionConfigError(
                origin, f"unknown key {key!r}; the keys are {keys} (start a note's key with '_')"
            )
    default = data.get("default", "ask" if base else None)
    if default is not None and default not in _ACTIONS:
        raise PermissionConfigError(
            origin, f'"default" is {default!r}; it must be "allow", "ask" or "deny"'
        )
    lists: list[tuple[_Rule, ...]] = []
    for action in _ACTIONS:
        items = data.get(action, [])
        if not isinstance(items, list):
            raise PermissionConfigError(
                origin, f'"{action}" must be a list of rules, such as ["read_file", "shell(ls *)"]'
            )
        lists.append(tuple(_parse_rule(item, action, origin, command_tools) for item in items))
    return _RuleSet(origin, default, (lists[0], lists[1], lists[2]))


# --------------------------------------------------------------------------- session grants


class SessionGrants:
    """What a person approved "always, for this session": tools, exact commands, patterns.

    A grant turns an *ask* into an *allow*; it never changes a deny, and never covers a
    command that could not be analysed. Kept in memory per session; ``to_json``/``from_json``
    store it.
    """

    __slots__ = ("_commands", "_patterns", "_tools")

    def __init__(self) -> None:
        self._tools: set[str] = set()
        self._commands: dict[str, set[str]] = {}
        self._patterns: dict[str, dict[str, _Pattern]] = {}

    def allow_tool(self, tool: str) -> None:
        self._tools.add(tool)

    def allow_commands(self, tool: str, commands: Iterable[str]) -> None:
        """Grants these exact simple commands (as ``Decision.to_ask`` lists them)."""
        self._commands.setdefault(tool, set()).update(" ".join(c.split()) for c in commands)

    def allow_command_pattern(self, tool: str, pattern: str) -> None:
        """Grants a command pattern with the syntax of rules, such as ``npm run *``."""
        if not pattern.strip():
            raise ValueError("A command pattern cannot be empty; use e.g. 'npm run *'.")
        compiled = _Pattern.compile(pattern)
        self._patterns.setdefault(tool, {})[compiled.text] = compiled

    def grant(self, tool: str, commands: Iterable[str] = ()) -> None:
        """Grants ``commands`` (a decision's ``to_ask``), or the tool itself when there are none.

        This replays a stored "always" answer. A tool grant never covers the commands of a
        command tool: granting ``shell`` with no commands allows no command.
        """
        listed = [c for c in commands if c]
        if listed:
            self.allow_commands(tool, listed)
        else:
            self.allow_tool(tool)

    def approve(self, decision: Decision, *, command_pattern: str | None = None) -> None:
        """Records an "always for this session" answer to an ask ``decision``.

        For a shell call this grants the exact commands it asked about, or ``command_pattern``
        instead when the person chose one; for any other tool, the tool.
        """
        if decision.action != "ask":
            return
        if not decision.parts:
            self.allow_tool(decision.tool)
        elif command_pattern is not None:
            self.allow_command_pattern(decision.tool, command_pattern)
        else:
            asked = (p for p in decision.parts if p.action == "ask" and p.analysed and p.command)
            self.allow_commands(decision.tool, (p.command for p in asked))

    def allows_tool(self, tool: str) -> bool:
        return tool in self._tools

    def _allows_command(self, tool: str, part: _Part, gated: bool) -> bool:
        granted = self._commands.get(tool)
        if granted and " ".join(part.display.split()) in granted:
            return True
        return any(
            p.matches(part.allow_text) and p.blocker(part, gated) is None
            for p in self._patterns.get(tool, {}).values()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "tools": sorted(self._tools),
            "commands": {t: sorted(c) for t, c in sorted(self._commands.items()) if c},
            "patterns": {t: sorted(p) for t, p in sorted(self._patterns.items()) if p},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionGrants:
        grants = cls()
        try:
            for tool in _strings(data.get("tools", []), "tools"):
                grants.allow_tool(tool)
            for tool, commands in _per_tool(data.get("commands", {}), "commands"):
                grants.allow_commands(tool, commands)
            for tool, patterns in _per_tool(data.get("patterns", {}), "patterns"):
                for pattern in patterns:
                    grants.allow_command_pattern(tool, pattern)
        except ValueError as exc:
            raise ValueError(f"Stored session grants are not valid: {exc}") from exc
        return grants

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionGrants:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"Stored session grants are not valid JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ValueError("Stored session grants must be a JSON object.")
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionGrants):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SessionGrants({self.to_json()})"


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'"{key}" must be a list of strings, not {value!r}')
    return value


def _per_tool(value: object, key: str) -> list[tuple[str, list[str]]]:
    if not isinstance(value, Mapping):
        raise ValueError(f'"{key}" must map tool names to lists of strings, not {value!r}')
    return [(str(tool), _strings(items, f"{key}.{tool}")) for tool, items in value.items()]


# --------------------------------------------------------------------------- the policy

_Applicable: TypeAlias = tuple[tuple[tuple[_Rule, ...], tuple[_Rule, ...], tuple[_Rule, ...]], ...]
_CACHE_SIZE: Final = 1024


class PermissionPolicy:
    """Decides allow, ask or deny for each tool call.

    Built from one rule set (a mapping in the JSON shape, or the built-in defaults), a policy can
    be layered with a session's rules (:meth:`merged`) and narrowed for a subagent
    (:meth:`restricted`); both return a new policy and leave this one as it is.
    """

    __slots__ = ("_cache", "_command_tools", "_layers", "_only")

    def __init__(
        self,
        rules: Mapping[str, Any] | None = None,
        *,
        origin: str = "the permission rules",
        command_tools: Mapping[str, str] | None = None,
    ) -> None:
        tools = DEFAULT_COMMAND_TOOLS if command_tools is None else command_tools
        self._command_tools: dict[str, str] = dict(tools)
        if rules is None:
            rules, origin = DEFAULT_RULES, "the built-in policy"
        self._layers: tuple[_RuleSet, ...] = (
            _rule_set(rules, origin, self._command_tools, base=True),
        )
        self._only: frozenset[str] | None = None
        self._cache: dict[tuple[str, str], _Applicable] = {}

    @classmethod
    def from_file(
        cls, path: Path | str, *, command_tools: Mapping[str, str] | None = None
    ) -> PermissionPolicy:
        """Reads a JSON permissions file; every problem is a :class:`PermissionConfigError`."""
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PermissionConfigError(
                origin, "the file does not exist. Create it, or unset PERMISSIONS_CONFIG to use "
                "the built-in policy"
            ) from None  # fmt: skip
        except (OSError, UnicodeDecodeError) as exc:
            raise PermissionConfigError(origin, f"the file cannot be read ({exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PermissionConfigError(
                origin, f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
        return cls(data, origin=origin, command_tools=command_tools)

    @classmethod
    def load(
        cls, path: Path | str | None, *, command_tools: Mapping[str, str] | None = None
    ) -> PermissionPolicy:
        """The policy of ``settings.permissions_config``: the file, or the built-in one if None."""
        if path is None:
            return cls(command_tools=command_tools)
        return cls.from_file(path, command_tools=command_tools)

    @property
    def command_tools(self) -> Mapping[str, str]:
        return dict(self._command_tools)

    def merged(
        self, session_rules: Mapping[str, Any], *, origin: str = "the session's rules"
    ) -> PermissionPolicy:
        """This policy with a session's rules layered on top.

        The session's allow, ask and deny rules are consulted before this policy's allow and
        ask rules (so a session may allow what the global policy asks about), but every deny
        rule of every layer still wins. A ``default`` in the session's rules replaces this one.
        """
        layer = _rule_set(session_rules, origin, self._command_tools, base=False)
        return self._derive((*self._layers, layer), self._only)

    def restricted(self, allowed_tools: Iterable[str]) -> PermissionPolicy:
        """This policy, denying every tool outside ``allowed_tools`` (for a subagent).

        Restrictions only narrow: restricting a restricted policy keeps the intersection.
        """
        allowed = frozenset(allowed_tools)
        return self._derive(self._layers, allowed if self._only is None else self._only & allowed)

    def _derive(
        self, layers: tuple[_RuleSet, ...], only: frozenset[str] | None
    ) -> PermissionPolicy:
        policy = object.__new__(PermissionPolicy)
        policy._command_tools = self._command_tools
        policy._layers = layers
        policy._only = only
        policy._cache = {}
        return policy

    def decide(
        self,
        tool: str,
        arguments: Mapping[str, Any],
        *,
        source: str = "function",
        session: SessionGrants | None = None,
    ) -> Decision:
        """The verdict on calling ``tool`` with ``arguments``; ``source`` is the tool's source."""
        if self._only is not None and tool not in self._only:
            return Decision(
                "deny", f"'{tool}' is not one of the tools this agent may use", None, tool
            )
        applicable = self._applicable(tool, source)
        argument = self._command_tools.get(tool)
        if argument is None:
            return self._decide_tool(tool, applicable, session)
        command = arguments.get(argument)
        if isinstance(command, str):
            parts, gated = _analyse(command)
            if not parts:
                parts = (_Part("", "", ("",)),)
        else:
            parts, gated = (_opaque("", f"the '{argument}' argument is not a string"),), False
        judged = [self._judge(tool, part, applicable, session, gated) for part in parts]
        return _combine(tool, [j for j in judged if j is not None])

    def _applicable(self, tool: str, source: str) -> _Applicable:
        """The rules that can apply to this tool, per layer and action, computed once."""
        key = (tool, source)
        found = self._cache.get(key)
        if found is None:
            commands_apply = tool in self._command_tools

            def pick(rules: tuple[_Rule, ...]) -> tuple[_Rule, ...]:
                return tuple(
                    r for r in rules if r.covers(tool, source) and (commands_apply or not r.command)
                )

            found = tuple(
                (pick(s.rules[0]), pick(s.rules[1]), pick(s.rules[2])) for s in self._layers
            )
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _default(self) -> Action:
        return next(s.default for s in reversed(self._layers) if s.default is not None)

    def _decide_tool(
        self, tool: str, applicable: _Applicable, session: SessionGrants | None
    ) -> Decision:
        for deny, _, _ in applicable:
            if deny:
                return Decision(
                    "deny", f"'{tool}' is denied by {deny[0].describe()}", deny[0].text, tool
                )
        action, rule = self._default(), None
        for _, ask, allow in reversed(applicable):
            if ask or allow:
                action, rule = ("ask", ask[0]) if ask else ("allow", allow[0])
                break
        if action == "ask" and session is not None and session.allows_tool(tool):
            return Decision("allow", f"'{tool}' was approved for this session", None, tool)
        if rule is None:
            return Decision(
                action, f"no rule matches '{tool}'; the default is {action}", None, tool
            )
        verb = "is allowed by" if action == "allow" else "needs approval under"
        return Decision(action, f"'{tool}' {verb} {rule.describe()}", rule.text, tool)

    def _judge(
        self,
        tool: str,
        part: _Part,
        applicable: _Applicable,
        session: SessionGrants | None,
        gated: bool,
    ) -> PartDecision | None:
        """The verdict on one part; None for a wrapped command that no deny rule matches."""
        for deny, _, _ in applicable:
            rule = next((r for r in deny if r.matches_any(part.deny_texts)), None)
            if rule is not None:
                return PartDecision(part.display, "deny", f"denied by {rule.describe()}", rule.text)
        if part.deny_only:
            return None
        if part.opaque is not None:
            return PartDecision(
                part.display, "ask", f"it cannot be analysed: {part.opaque}", analysed=False
            )
        action, chosen, note = self._default(), None, None
        for _, ask, allow in reversed(applicable):
            chosen = next((r for r in ask if r.matches_any(part.deny_texts)), None)
            if chosen is not None:
                action = "ask"
                break
            chosen, blocked = _allowing(allow, part, gated)
            note = note or blocked
            if chosen is not None:
                action = "allow"
                break
        if action == "ask" and session is not None and session._allows_command(tool, part, gated):
            return PartDecision(part.display, "allow", "approved for this session")
        if chosen is None:
            reason = f"the default is {action}"
            why = f"{note}, and no other rule matches" if note else "no rule matches"
            return PartDecision(part.display, action, f"{why}; {reason}")
        if action == "ask":
            return PartDecision(
                part.display, "ask", f"{chosen.describe()} asks for approval", chosen.text
            )
        return PartDecision(part.display, "allow", f"allowed by {chosen.describe()}", chosen.text)

    def __repr__(self) -> str:
        origins = " + ".join(s.origin for s in self._layers)
        only = f", only {sorted(self._only)}" if self._only is not None else ""
        return f"PermissionPolicy({origins}{only})"


def _allowing(
    rules: tuple[_Rule, ...], part: _Part, gated: bool
) -> tuple[_Rule | None, str | None]:
    """The first allow rule that covers ``part``, and otherwise why one that matched did not."""
    blocked = None
    for rule in rules:
        if rule.command is None:
            if rule.source is not None:
                continue  # '@builtin' is a category: it does not allow every shell command
            return rule, None  # the whole tool by name: every command that can be analysed
        if rule.command.matches(part.allow_text):
            why = rule.command.blocker(part, gated)
            if why is None:
                return rule, None
            blocked = blocked or f"'{rule.text}' matches, but {why}"
    return None, blocked


def _combine(tool: str, judged: list[PartDecision]) -> Decision:
    """One decision from the parts': any deny refuses all; else ask about what is not allowed."""
    parts = tuple(judged)
    denied = next((p for p in judged if p.action == "deny"), None)
    if denied is not None:
        return Decision("deny", f"'{denied.command}' is {denied.reason}", denied.rule, tool, parts)
    asked = [p for p in judged if p.action == "ask"]
    if asked:
        to_ask = list(dict.fromkeys(p.command for p in asked if p.command))
        listed = _listing(f"'{p.command or '(empty command)'}' ({p.reason})" for p in asked)
        return Decision("ask", f"needs approval: {listed}", asked[0].rule, tool, parts, to_ask)
    rules = {p.rule for p in judged}
    listed = _listing(f"'{p.command}' {p.reason}" for p in judged)
    rule = next(iter(rules)) if len(rules) == 1 else None
    return Decision("allow", f"allowed: {listed}", rule, tool, parts)


def _listing(items: Iterable[str], limit: int = 5) -> str:
    """Distinct items joined with '; ', the first ``limit`` of them and a count of the rest."""
    distinct = list(dict.fromkeys(items))
    more = f"; and {len(distinct) - limit} more" if len(distinct) > limit else ""
    return "; ".join(distinct[:limit]) + more
