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

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeAlias

from agent_template.services._permission_rules import (
    Action,
    CommandPattern,
    PermissionConfigError,
    Rule,
    RuleSet,
    rule_set,
)
from agent_template.services._shell_split import Part, analyse, opaque_part, split_command

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
        self._patterns: dict[str, dict[str, CommandPattern]] = {}

    def allow_tool(self, tool: str) -> None:
        self._tools.add(tool)

    def allow_commands(self, tool: str, commands: Iterable[str]) -> None:
        """Grants these exact simple commands (as ``Decision.to_ask`` lists them)."""
        self._commands.setdefault(tool, set()).update(" ".join(c.split()) for c in commands)

    def allow_command_pattern(self, tool: str, pattern: str) -> None:
        """Grants a command pattern with the syntax of rules, such as ``npm run *``."""
        if not pattern.strip():
            raise ValueError("A command pattern cannot be empty; use e.g. 'npm run *'.")
        compiled = CommandPattern.compile(pattern)
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

    def _allows_command(self, tool: str, part: Part, gated: bool) -> bool:
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

_Applicable: TypeAlias = tuple[tuple[tuple[Rule, ...], tuple[Rule, ...], tuple[Rule, ...]], ...]
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
        self._layers: tuple[RuleSet, ...] = (
            rule_set(rules, origin, self._command_tools, base=True),
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
        layer = rule_set(session_rules, origin, self._command_tools, base=False)
        return self._derive((*self._layers, layer), self._only)

    def restricted(self, allowed_tools: Iterable[str]) -> PermissionPolicy:
        """This policy, denying every tool outside ``allowed_tools`` (for a subagent).

        Restrictions only narrow: restricting a restricted policy keeps the intersection.
        """
        allowed = frozenset(allowed_tools)
        return self._derive(self._layers, allowed if self._only is None else self._only & allowed)

    def _derive(self, layers: tuple[RuleSet, ...], only: frozenset[str] | None) -> PermissionPolicy:
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
            parts, gated = analyse(command)
            if not parts:
                parts = (Part("", "", ("",)),)
        else:
            parts, gated = (opaque_part("", f"the '{argument}' argument is not a string"),), False
        judged = [self._judge(tool, part, applicable, session, gated) for part in parts]
        return _combine(tool, [j for j in judged if j is not None])

    def _applicable(self, tool: str, source: str) -> _Applicable:
        """The rules that can apply to this tool, per layer and action, computed once."""
        key = (tool, source)
        found = self._cache.get(key)
        if found is None:
            commands_apply = tool in self._command_tools

            def pick(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
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
        part: Part,
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


def _allowing(rules: tuple[Rule, ...], part: Part, gated: bool) -> tuple[Rule | None, str | None]:
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
