"""Shell command analysis: the simple commands a shell would run for one command line.

:mod:`agent_template.services.permissions` judges every one of them against its rules. The lexer
and the grouper follow the shell grammar far enough to find each simple command, including those
inside ``$(...)``, backquotes, process substitutions, subshells, groups, ``eval`` and ``sh -c``
scripts, and the commands that a wrapper such as ``nohup`` or ``xargs`` may run.

The analysis is strict on purpose, because a permission check that misreads a command could allow
what it should ask about. Syntax it does not follow (here-documents, ``case``, arithmetic, computed
command names, unbalanced quotes...) is never guessed at: the command becomes one *opaque* part,
which is always asked about. Nothing here expands a variable or runs anything.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

__all__ = ["Part", "analyse", "opaque_part", "split_command"]


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
class Part:
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


def _part(simple: _Simple, *, deny_only: bool = False, opaque: str | None = None) -> Part:
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
    return Part(
        display=display,
        allow_text=text if risky or not simple.words else bare,
        deny_texts=tuple(texts),
        writes=any(_writes(op, t) for op, t in simple.redirects),
        substitution=any(m in display for m in _MARKERS),
        opaque=opaque,
        deny_only=deny_only,
    )


def opaque_part(command: str, why: str) -> Part:
    text = command.strip()
    normalised = " ".join(text.split())
    return Part(
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


def _nested(script: str, outer: _Simple, depth: int, deny_only: bool) -> list[Part]:
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


def _wrapped(simple: _Simple, depth: int) -> list[Part]:
    """Deny-only parts for the commands a wrapper may run: every suffix that starts with a
    word that is not an option (``timeout -s KILL 5 rm x`` -> ``KILL 5 rm x``, ``rm x``...)."""
    out: list[Part] = []
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
) -> list[Part]:
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


def _parse(command: str, depth: int) -> list[Part]:
    tokens, _ = _lex(command, 0, None, depth)
    return [part for simple in _group(tokens) for part in _simple_parts(simple, depth)]


def analyse(command: str) -> tuple[tuple[Part, ...], bool]:
    """The parts of a command, from a small cache: agents run the same commands again."""
    if len(command) > _CACHED_LENGTH:
        return _analyse_now(command)
    return _analyse_cached(command)


def _analyse_now(command: str) -> tuple[tuple[Part, ...], bool]:
    """The parts of a command, and whether it holds a substitution marker anywhere.

    The marker test reads the raw text, quotes and comments included, so that no lexing
    subtlety can let a wildcard rule cover a command substitution.
    """
    flat = command.replace("\\\n", "")
    gated = any(m in flat for m in _MARKERS)
    try:
        return tuple(_parse(command, 0)), gated
    except _Unanalysable as exc:
        return (opaque_part(command, exc.why),), gated
    except RecursionError:
        return (opaque_part(command, "the command is nested too deeply"),), gated


_CACHED_LENGTH: Final = 4096
_analyse_cached = functools.lru_cache(maxsize=512)(_analyse_now)


def split_command(command: str) -> list[str]:
    """The simple commands a shell would run for ``command``, in order.

    Substitutions, subshells, groups, ``eval`` and ``sh -c`` scripts are opened, so
    ``echo $(date) && (cd x; ls)`` gives ``['echo $(date)', 'date', 'cd x', 'ls']``. A command
    that cannot be analysed (an unbalanced quote, a here-document...) comes back whole, as one
    item. Never raises.
    """
    parts, _ = analyse(command)
    return [part.display for part in parts if not part.deny_only]
