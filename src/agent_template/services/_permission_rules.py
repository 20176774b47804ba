"""Permission rules: the text of a rule set, checked and compiled into matchers.

:mod:`agent_template.services.permissions` layers the compiled rule sets into a policy. Every
problem with a rule is found here, when a policy is built, and named in a
:class:`PermissionConfigError`; a decision then only runs compiled regular expressions.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from agent_template.errors import ConfigurationError
from agent_template.services._shell_split import Part

__all__ = ["Action", "CommandPattern", "PermissionConfigError", "Rule", "RuleSet", "rule_set"]

Action: TypeAlias = Literal["allow", "ask", "deny"]

_ACTIONS: Final[tuple[Action, ...]] = ("deny", "ask", "allow")  # most restrictive first
_SOURCES: Final = ("builtin", "function", "mcp", "subagent")

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


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class CommandPattern:
    """A command pattern: ``*`` matches anything (``\\*`` is a literal star), and a trailing
    `` *`` also matches nothing, so ``git *`` covers ``git`` too."""

    text: str
    regex: re.Pattern[str]
    wildcard: bool
    redirects: bool  # mentions '>': may cover a command that writes a file

    @classmethod
    def compile(cls, pattern: str) -> CommandPattern:
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

    def blocker(self, part: Part, gated: bool) -> str | None:
        """Why this pattern, which matches ``part``, may still not allow it; None if it may."""
        if self.wildcard and (gated or part.substitution):
            return "a wildcard does not cover command substitution"
        if part.writes and not self.redirects:
            return "it does not cover writing to a file with '>'"
        return None


@dataclass(frozen=True, slots=True)
class Rule:
    text: str
    origin: str
    tool: re.Pattern[str] | None  # None for a source rule
    source: str | None
    command: CommandPattern | None

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


def _parse_rule(raw: object, action: str, origin: str, command_tools: Mapping[str, str]) -> Rule:
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
        return Rule(text, origin, None, name[1:], None)
    if command is not None and not any(fnmatch.fnmatchcase(t, name) for t in command_tools):
        tools = ", ".join(sorted(command_tools)) or "none are configured"
        raise fail(f"only the command tools take a command pattern ({tools})")
    pattern = CommandPattern.compile(command) if command is not None else None
    return Rule(text, origin, re.compile(fnmatch.translate(name)), None, pattern)


@dataclass(frozen=True, slots=True)
class RuleSet:
    origin: str
    default: Action | None
    rules: tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[Rule, ...]]  # deny, ask, allow


def rule_set(data: object, origin: str, command_tools: Mapping[str, str], *, base: bool) -> RuleSet:
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
    lists: list[tuple[Rule, ...]] = []
    for action in _ACTIONS:
        items = data.get(action, [])
        if not isinstance(items, list):
            raise PermissionConfigError(
                origin, f'"{action}" must be a list of rules, such as ["read_file", "shell(ls *)"]'
            )
        lists.append(tuple(_parse_rule(item, action, origin, command_tools) for item in items))
    return RuleSet(origin, default, (lists[0], lists[1], lists[2]))
