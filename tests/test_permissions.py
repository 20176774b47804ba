"""Permission policy: rule matching, precedence, shell command splitting, grants, config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_template.errors import ConfigurationError
from agent_template.services.permissions import (
    DEFAULT_RULES,
    Decision,
    PermissionConfigError,
    PermissionPolicy,
    SessionGrants,
    split_command,
)

DEFAULT = PermissionPolicy()


def shell(policy: PermissionPolicy, command: str, **kw: Any) -> Decision:
    return policy.decide("shell", {"command": command}, source="builtin", **kw)


def rules(**sets: Any) -> PermissionPolicy:
    return PermissionPolicy({"default": "ask", **sets})


# --------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("command", "parts"),
    [
        ("a && b | c; d", ["a", "b", "c", "d"]),
        ("a || b", ["a", "b"]),
        ("a & b", ["a", "b"]),
        ("a\nb", ["a", "b"]),
        ("a |& b", ["a", "b"]),
        ("  git    status  ", ["git status"]),
        ('echo "a && b"', ['echo "a && b"']),
        ("echo 'a; b' | wc", ["echo 'a; b'", "wc"]),
        (r"echo a\;b", [r"echo a\;b"]),
        ("echo hi # && rm -rf x", ["echo hi"]),
        ("echo a#b", ["echo a#b"]),
        ("   # only a comment", []),
        ("", []),
        ("ls \\\n  -la", ["ls -la"]),
        ("echo $(rm -rf ~)", ["echo $(rm -rf ~)", "rm -rf ~"]),
        ('echo "$(date) and `whoami`"', ['echo "$(date) and `whoami`"', "date", "whoami"]),
        ("echo $(echo $(id))", ["echo $(echo $(id))", "echo $(id)", "id"]),
        ("(cd x && ls) | wc -l", ["cd x", "ls", "wc -l"]),
        ("{ a; b; }", ["a", "b"]),
        ("{ a; } > out", ["a", "> out"]),
        ("diff <(ls a) <(ls b)", ["diff <(ls a) <(ls b)", "ls a", "ls b"]),
        ('eval "git status; rm x"', ["git status", "rm x"]),
        ("bash -c 'git status && npm test'", ["git status", "npm test"]),
        ("sh -ec 'ls'", ["ls"]),
        ("/bin/bash -o pipefail -c 'a | b'", ["a", "b"]),
        ("bash script.sh", ["bash script.sh"]),
        ("FOO=1 make test", ["FOO=1 make test"]),
        ("cat a > b 2>&1", ["cat a > b 2>&1"]),
        ("echo 2 >f", ["echo 2 > f"]),
        ("ls 2>/dev/null", ["ls 2> /dev/null"]),
        ("if git status; then rm x; else ls; fi", ["git status", "rm x", "ls"]),
        ("for f in *.py; do wc -l $f; done", ["wc -l $f"]),
        ("for f in $(ls); do cat $f; done", ["ls", "cat $f"]),
        ("for x do rm y; done", ["rm y"]),
        ("while true; do sleep 1; done", ["true", "sleep 1"]),
        ("! grep x f", ["grep x f"]),
        ("x=$(date)", ["x=$(date)", "date"]),
        ("< in", []),
    ],
)
def test_split_command(command: str, parts: list[str]) -> None:
    assert split_command(command) == parts


@pytest.mark.parametrize(
    "command",
    [
        'echo "unbalanced',
        "echo 'unbalanced",
        "echo $(unclosed",
        "echo `unclosed",
        "cat <<EOF\nhello\nEOF",
        "case $x in a) rm y;; esac",
        "f() { rm -rf x; }",
        "echo $((1 + 2))",
        "[[ -f x ]] && cat x",
        "echo ${x@P}",
        "echo ${x:-$(id)}",
        "echo ${!x}",
        "echo ${a[i]}",
        "echo ${x:1}",
        "(a",
        "a)",
        "echo `echo \\`id\\``",
    ],
)
def test_unanalysable_commands_come_back_whole_and_ask(command: str) -> None:
    assert split_command(command) == [command.strip()]
    allow_all = rules(allow=["shell(*)", "shell"])
    decision = shell(allow_all, command)
    assert decision.action == "ask"
    assert decision.parts[0].analysed is False
    assert "cannot be analysed" in decision.reason


def test_unanalysable_commands_are_still_denied_by_matching_deny_rules() -> None:
    decision = shell(DEFAULT, 'sudo rm "unbalanced')
    assert decision.action == "deny"
    assert decision.rule == "shell(sudo *)"


# --------------------------------------------------------------------------- rule matching


@pytest.mark.parametrize(
    ("rule", "command", "allowed"),
    [
        ("shell(git status)", "git status", True),
        ("shell(git status)", "git   status", True),
        ("shell(git status)", "git 'status'", True),
        ("shell(git status)", "git status -s", False),
        ("shell(git status)", "git statusx", False),
        ("shell(git *)", "git", True),
        ("shell(git *)", "git log --oneline", True),
        ("shell(git *)", "gitk", False),
        ("shell(git *)", "Git status", False),
        ("shell(npm run *:test)", "npm run unit:test", True),
        ("shell(npm run *:test)", "npm run unit:lint", False),
        (r"shell(echo \*)", "echo '*'", True),
        (r"shell(echo \*)", "echo x", False),
        ("shell(ls [ab])", "ls [ab]", True),
        ("shell(ls [ab])", "ls a", False),
        ("shell(*)", "anything at all", True),
        ("shell", "anything at all", True),
        ("sh*", "anything at all", True),
        ("*", "anything at all", True),
        ("@builtin", "anything at all", False),  # a source does not allow every command
        ("@function", "anything at all", False),
    ],
)
def test_command_rule_matching(rule: str, command: str, allowed: bool) -> None:
    decision = shell(rules(allow=[rule]), command)
    assert decision.action == ("allow" if allowed else "ask"), decision.reason


@pytest.mark.parametrize(
    ("rule", "tool", "source", "allowed"),
    [
        ("read_file", "read_file", "builtin", True),
        ("read_file", "Read_file", "builtin", False),
        ("read_?ile", "read_file", "builtin", True),
        ("todo_*", "todo_write", "function", True),
        ("todo_*", "my_todo_write", "function", False),
        ("mcp__*", "mcp__github__search", "mcp", True),
        ("github__[ab]*", "github__add", "mcp", True),
        ("@function", "anything", "function", True),
        ("@function", "anything", "builtin", False),
        ("@subagent", "researcher", "subagent", True),
        ("*", "whatever", "mcp", True),
        ("shell(git *)", "git", "function", False),  # command rules only concern command tools
    ],
)
def test_tool_rule_matching(rule: str, tool: str, source: str, allowed: bool) -> None:
    decision = rules(allow=[rule]).decide(tool, {}, source=source)
    assert decision.action == ("allow" if allowed else "ask")
    assert decision.rule == (rule if allowed else None)


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ({"allow": ["x"], "ask": ["x"], "deny": ["x"]}, "deny"),
        ({"allow": ["x"], "ask": ["x"]}, "ask"),
        ({"allow": ["x"]}, "allow"),
        ({"allow": ["*"], "deny": ["x"]}, "deny"),
        ({"allow": ["x"], "ask": ["@function"]}, "ask"),
        ({"allow": ["@function"], "deny": ["x*"]}, "deny"),
        ({}, "ask"),
        ({"default": "deny"}, "deny"),
        ({"default": "allow"}, "allow"),
        ({"default": "allow", "ask": ["x"]}, "ask"),
    ],
)
def test_precedence_deny_beats_ask_beats_allow(sets: dict[str, Any], expected: str) -> None:
    policy = PermissionPolicy({"default": "ask", **sets})
    assert policy.decide("x", {}, source="function").action == expected


def test_most_restrictive_command_rule_wins() -> None:
    policy = rules(allow=["shell(git *)"], ask=["shell(git push *)"], deny=["shell(git push -f*)"])
    assert shell(policy, "git log").action == "allow"
    assert shell(policy, "git push origin main").action == "ask"
    assert shell(policy, "git push -f origin").action == "deny"


def test_a_bare_tool_rule_covers_every_command() -> None:
    """Placed in ask, `shell` overrides the command allow rules, as precedence says."""
    policy = rules(allow=["shell(ls *)"], ask=["shell"])
    assert shell(policy, "ls").action == "ask"
    assert shell(rules(deny=["shell"], allow=["shell(ls *)"]), "ls").action == "deny"
    assert shell(rules(deny=["@builtin"], allow=["shell(ls *)"]), "ls").action == "deny"
    assert shell(rules(ask=["@builtin"], allow=["shell(ls *)"]), "ls").action == "ask"


def test_the_shell_tool_registered_as_a_function_is_not_allowed_by_at_function() -> None:
    decision = DEFAULT.decide("shell", {"command": "npm test"}, source="function")
    assert decision.action == "ask"
    assert DEFAULT.decide("shell", {"command": "ls"}, source="function").action == "allow"


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("tool", "source", "expected"),
    [
        ("read_file", "builtin", "allow"),
        ("list_files", "builtin", "allow"),
        ("glob", "builtin", "allow"),
        ("grep", "builtin", "allow"),
        ("todo_write", "function", "allow"),
        ("my_function", "function", "allow"),
        ("researcher", "subagent", "allow"),
        ("write_file", "builtin", "ask"),
        ("edit_file", "builtin", "ask"),
        ("github__create_issue", "mcp", "ask"),
        ("some_new_builtin", "builtin", "ask"),
    ],
)
def test_default_policy_for_tools(tool: str, source: str, expected: str) -> None:
    assert DEFAULT.decide(tool, {}, source=source).action == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ls -la", "allow"),
        ("pwd", "allow"),
        ("cd src && ls && pwd", "allow"),
        ("cat README.md | head -5 | wc -l", "allow"),
        ("grep -rn TODO src", "allow"),
        ("rg -n foo", "allow"),
        ("find . -name '*.py'", "allow"),
        ("git status", "allow"),
        ("git diff HEAD~1", "allow"),
        ("git log --oneline -5", "allow"),
        ("git show HEAD", "allow"),
        ("echo hello", "allow"),
        ("cat a 2>/dev/null", "allow"),
        ("npm test", "ask"),
        ("python script.py", "ask"),
        ("git commit -m x", "ask"),
        ("git push", "ask"),
        ("rm -rf build", "ask"),
        ("find . -name x -exec rm {} \\;", "ask"),
        ("find . -delete", "ask"),
        ("rg --pre cat foo", "ask"),
        ("git diff --output=patch", "ask"),
        ("echo hi > notes.txt", "ask"),
        ("sudo ls", "deny"),
        ("su -", "deny"),
        ("rm -rf /", "deny"),
        ("rm -rf /*", "deny"),
        ("rm -r -f /", "deny"),
        ("rm -rf / --no-preserve-root", "deny"),
        ("rm -rf ~", "deny"),
        ("rm -rf ~/", "deny"),
        ("rm -rf /tmp/build", "ask"),
        ("mkfs.ext4 /dev/sda1", "deny"),
        ("dd if=image.iso of=/dev/sdb bs=4M", "deny"),
        ("dd if=/dev/zero of=blank.img count=1", "ask"),
    ],
)
def test_default_policy_for_commands(command: str, expected: str) -> None:
    assert shell(DEFAULT, command).action == expected


def test_missing_config_means_the_built_in_policy() -> None:
    policy = PermissionPolicy.load(None)
    assert shell(policy, "sudo ls").action == "deny"
    assert policy.decide("read_file", {}, source="builtin").action == "allow"
    assert DEFAULT_RULES["default"] == "ask"


# --------------------------------------------------------------------------- compound commands


def test_one_denied_part_refuses_the_whole_command() -> None:
    policy = rules(allow=["shell(git *)"], deny=["shell(rm *)"])
    decision = shell(policy, "git status && rm -rf x")
    assert decision.action == "deny"
    assert decision.rule == "shell(rm *)"
    assert "rm -rf x" in decision.reason
    assert [p.action for p in decision.parts] == ["allow", "deny"]


def test_only_parts_not_allowed_are_asked_about() -> None:
    policy = rules(allow=["shell(git *)"])
    decision = shell(policy, "git status && npm test")
    assert decision.action == "ask"
    assert decision.to_ask == ["npm test"]
    assert [(p.command, p.action) for p in decision.parts] == [
        ("git status", "allow"),
        ("npm test", "ask"),
    ]


def test_repeated_parts_are_asked_about_once() -> None:
    decision = shell(rules(), "make; make; ls")
    assert decision.to_ask == ["make", "ls"]


def test_all_parts_allowed_is_allow() -> None:
    decision = shell(rules(allow=["shell(git *)", "shell(ls *)"]), "git status; ls | ls")
    assert decision.action == "allow"
    assert decision.to_ask == []


@pytest.mark.parametrize(
    ("command", "expected", "to_ask"),
    [
        # quotes keep separators inside one command
        ('echo "a && rm -rf x"', "allow", []),
        ("echo 'a; rm -rf x'", "allow", []),
        # substitution is opened, and never covered by a wildcard
        ("echo $(rm -rf x)", "deny", []),
        ("echo `rm -rf x`", "deny", []),
        ('echo "$(rm -rf x)"', "deny", []),
        ("echo $(date)", "ask", ["echo $(date)", "date"]),
        ("echo '$(date)'", "ask", ["echo '$(date)'"]),
        ("cat <(rm -rf x)", "deny", []),
        # a substitution marker anywhere (even a comment, even a loop list) stops wildcards
        ("echo hi # $(date)", "ask", ["echo hi"]),
        ("for f in $(echo a); do echo $f; done", "ask", ["echo a", "echo $f"]),
        # subshells and groups
        ("(cd x && rm -rf y)", "deny", []),
        ("{ echo a; rm -rf y; }", "deny", []),
        # bash -c, sh -c, eval
        ("bash -c 'echo a && rm -rf y'", "deny", []),
        ('sh -c "echo a; npm test"', "ask", ["npm test"]),
        ("bash -c 'echo ok'", "allow", []),
        ("eval 'rm -rf y'", "deny", []),
        ('bash -c "$SCRIPT"', "ask", ['bash -c "$SCRIPT"']),
        ("BASH_ENV=x bash -c 'echo ok'", "ask", ["BASH_ENV=x bash -c 'echo ok'"]),
        ("bash -c 'echo ok' > out", "ask", ["bash -c 'echo ok' > out"]),
        # wrapped commands meet the deny rules
        ("nohup rm -rf y &", "deny", []),
        ("timeout -s KILL 5 rm -rf y", "deny", []),
        ("env A=1 rm -rf y", "deny", []),
        ("/bin/rm -rf y", "deny", []),
        ('r"m" -rf y', "deny", []),
        # a computed command name cannot be matched
        ("$CMD -rf y", "ask", ["$CMD -rf y"]),
        ("/bin/r? -rf y", "ask", ["/bin/r? -rf y"]),
        # leading assignments
        ("FOO=1 echo hi", "allow", []),
        ("FOO=1 rm -rf y", "deny", []),
        ("PATH=/tmp/evil:$PATH echo hi", "ask", ["PATH=/tmp/evil:$PATH echo hi"]),
        ("LD_PRELOAD=x.so echo hi", "ask", ["LD_PRELOAD=x.so echo hi"]),
        # redirections
        ("echo hi 2>&1", "allow", []),
        ("echo hi > /dev/null", "allow", []),
        ("echo hi < in.txt", "allow", []),
        ("echo hi > out.txt", "ask", ["echo hi > out.txt"]),
        ("echo hi >> out.txt", "ask", ["echo hi >> out.txt"]),
        ("echo hi &> out.txt", "ask", ["echo hi &> out.txt"]),
        ("echo hi > $F", "ask", ["echo hi > $F"]),
        # unbalanced quotes
        ('echo "hi', "ask", ['echo "hi']),
    ],
)
def test_shell_analysis(command: str, expected: str, to_ask: list[str]) -> None:
    policy = rules(allow=["shell(echo *)", "shell(cat *)"], deny=["shell(rm *)"])
    decision = shell(policy, command)
    assert decision.action == expected, decision.reason
    assert decision.to_ask == to_ask


def test_what_deny_rules_cannot_see_is_never_allowed_by_a_wildcard() -> None:
    policy = rules(allow=["shell(*)"], deny=["shell(rm *)"])
    assert shell(policy, "/bin/r? -rf y").action == "ask"
    assert shell(policy, "{r,}m -rf y").action == "ask"
    assert shell(policy, "$RM -rf y").action == "ask"
    assert shell(policy, "bash -i -c 'rm -rf y'").action == "ask"
    assert shell(policy, "bash -c 'rm -rf y' > log").action == "deny"
    assert shell(policy, "ls -la").action == "allow"


def test_exact_rules_may_cover_substitution_and_patterns_may_cover_writes() -> None:
    policy = rules(allow=["shell(echo $(date))", "shell(date)", "shell(echo * > *.log)"])
    assert shell(policy, "echo $(date)").action == "allow"
    assert shell(policy, "echo hi > run.log").action == "allow"
    assert shell(policy, "echo hi > run.txt").action == "ask"


def test_the_reason_says_why_a_wildcard_did_not_apply() -> None:
    policy = rules(allow=["shell(cat *)"])
    assert "does not cover writing" in shell(policy, "cat a > b").reason
    assert "does not cover command substitution" in shell(policy, "cat $(ls)").reason


def test_a_command_argument_that_is_not_a_string_needs_approval() -> None:
    policy = rules(allow=["shell(*)"])
    assert policy.decide("shell", {}, source="builtin").action == "ask"
    assert policy.decide("shell", {"command": ["ls"]}, source="builtin").action == "ask"


def test_command_tools_are_configurable() -> None:
    policy = PermissionPolicy(
        {"allow": ["run(ls *)"], "deny": ["run(rm *)"]}, command_tools={"run": "cmd"}
    )
    assert policy.decide("run", {"cmd": "ls && rm x"}).action == "deny"
    assert policy.decide("run", {"cmd": "ls -la"}).action == "allow"
    assert policy.decide("shell", {"command": "ls"}).action == "ask"  # not a command tool here
    with pytest.raises(PermissionConfigError, match="only the command tools"):
        PermissionPolicy({"allow": ["shell(ls)"]}, command_tools={"run": "cmd"})


# --------------------------------------------------------------------------- session grants


def test_always_for_this_session_grants_the_asked_commands() -> None:
    policy = rules(allow=["shell(git *)"])
    grants = SessionGrants()
    first = shell(policy, "git status && npm test && npm run build", session=grants)
    assert first.to_ask == ["npm test", "npm run build"]
    grants.approve(first)
    assert shell(policy, "npm test", session=grants).action == "allow"
    assert shell(policy, "git diff; npm  run build", session=grants).action == "allow"
    assert shell(policy, "npm install", session=grants).action == "ask"
    spaced = shell(policy, 'npm run "a  b"', session=grants)
    grants.approve(spaced)
    assert shell(policy, 'npm run "a  b"', session=grants).action == "allow"


def test_a_grant_for_a_tool() -> None:
    grants = SessionGrants()
    decision = DEFAULT.decide("write_file", {"path": "x"}, source="builtin", session=grants)
    assert decision.action == "ask"
    grants.approve(decision)
    later = DEFAULT.decide("write_file", {"path": "y"}, source="builtin", session=grants)
    assert later.action == "allow"
    assert "approved for this session" in later.reason


def test_a_chosen_pattern_grant() -> None:
    grants = SessionGrants()
    decision = shell(DEFAULT, "npm test", session=grants)
    grants.approve(decision, command_pattern="npm *")
    assert shell(DEFAULT, "npm run lint", session=grants).action == "allow"
    # like any wildcard, a pattern grant does not cover substitution or writes
    assert shell(DEFAULT, "npm run $(id)", session=grants).action == "ask"
    assert shell(DEFAULT, "npm ls > deps.txt", session=grants).action == "ask"


def test_replaying_stored_answers_with_grant() -> None:
    grants = SessionGrants()
    grants.grant("write_file", [])
    grants.grant("shell", ["npm test", ""])
    grants.grant("shell")  # an empty to_ask: a tool grant, which covers no command
    assert DEFAULT.decide("write_file", {}, source="builtin", session=grants).action == "allow"
    assert shell(DEFAULT, "npm test", session=grants).action == "allow"
    assert shell(DEFAULT, "make", session=grants).action == "ask"


def test_grants_never_override_a_deny() -> None:
    grants = SessionGrants()
    grants.allow_command_pattern("shell", "*")
    grants.allow_commands("shell", ["sudo ls"])
    grants.allow_tool("secret_tool")
    policy = rules(deny=["shell(sudo *)", "secret_tool"])
    assert shell(policy, "sudo ls", session=grants).action == "deny"
    assert policy.decide("secret_tool", {}, session=grants).action == "deny"
    assert shell(policy, "make", session=grants).action == "allow"


def test_grants_never_cover_unanalysable_commands() -> None:
    grants = SessionGrants()
    decision = shell(DEFAULT, 'echo "unbalanced', session=grants)
    grants.approve(decision)
    assert shell(DEFAULT, 'echo "unbalanced', session=grants).action == "ask"
    assert grants.to_dict()["commands"] == {}


def test_approving_an_allow_or_a_deny_records_nothing() -> None:
    grants = SessionGrants()
    grants.approve(shell(DEFAULT, "ls"))
    grants.approve(shell(DEFAULT, "sudo ls"))
    assert grants == SessionGrants()


def test_grants_round_trip_through_json() -> None:
    grants = SessionGrants()
    grants.allow_tool("write_file")
    grants.allow_commands("shell", ["npm test", "make  build"])
    grants.allow_command_pattern("shell", "git   push *")
    text = grants.to_json()
    again = SessionGrants.from_json(text)
    assert again == grants
    assert json.loads(text) == {
        "version": 1,
        "tools": ["write_file"],
        "commands": {"shell": ["make build", "npm test"]},
        "patterns": {"shell": ["git push *"]},
    }
    assert shell(DEFAULT, "git push origin", session=again).action == "allow"


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", '{"tools": [1]}', '{"commands": {"shell": "ls"}}', '{"patterns": 3}'],
)
def test_invalid_stored_grants(text: str) -> None:
    with pytest.raises(ValueError, match="session grants"):
        SessionGrants.from_json(text)


# --------------------------------------------------------------------------- layering


def test_session_rules_may_allow_what_the_global_policy_asks() -> None:
    session = DEFAULT.merged({"allow": ["write_file", "shell(npm *)"]})
    assert session.decide("write_file", {}, source="builtin").action == "allow"
    assert shell(session, "npm test && git status").action == "allow"
    assert DEFAULT.decide("write_file", {}, source="builtin").action == "ask"  # unchanged


def test_global_deny_always_wins_over_session_rules() -> None:
    session = DEFAULT.merged({"default": "allow", "allow": ["shell(*)", "shell", "*"]})
    assert shell(session, "sudo ls").action == "deny"
    assert shell(session, "make").action == "allow"


def test_session_rules_may_be_stricter() -> None:
    session = DEFAULT.merged({"ask": ["read_file"], "deny": ["shell(git push *)"]})
    assert session.decide("read_file", {}, source="builtin").action == "ask"
    assert shell(session, "git status && git push").action == "deny"
    assert shell(session, "git status").action == "allow"  # the global allow still applies


def test_a_session_default_replaces_the_global_one() -> None:
    strict = DEFAULT.merged({"default": "deny"})
    assert strict.decide("unknown", {}, source="builtin").action == "deny"
    assert DEFAULT.merged({}).decide("unknown", {}, source="builtin").action == "ask"


def test_bad_session_rules_name_their_origin() -> None:
    with pytest.raises(PermissionConfigError, match="the session's rules") as info:
        DEFAULT.merged({"allow": ["shell(git"]})
    assert info.value.rule == "shell(git"


def test_restricted_policies_deny_every_other_tool() -> None:
    child = DEFAULT.restricted({"read_file", "shell"})
    assert child.decide("read_file", {}, source="builtin").action == "allow"
    denied = child.decide("write_file", {}, source="builtin", session=_granting("write_file"))
    assert denied.action == "deny"
    assert "not one of the tools" in denied.reason
    assert shell(child, "sudo ls").action == "deny"  # the parent's rules still apply
    grandchild = child.restricted({"shell", "write_file"})
    assert grandchild.decide("read_file", {}, source="builtin").action == "deny"
    assert grandchild.decide("write_file", {}, source="builtin").action == "deny"
    assert shell(grandchild.merged({"allow": ["*"]}), "ls").action == "allow"
    assert grandchild.merged({"allow": ["*"]}).decide("glob", {}).action == "deny"


def _granting(tool: str) -> SessionGrants:
    grants = SessionGrants()
    grants.allow_tool(tool)
    return grants


# --------------------------------------------------------------------------- config files


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "permissions.json"
    path.write_text(content, encoding="utf-8")
    return path


def test_a_config_file_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"default": "deny", "allow": ["read_file", "shell(ls *)"]}))
    policy = PermissionPolicy.load(path)
    assert policy.decide("read_file", {}, source="builtin").action == "allow"
    assert shell(policy, "ls -la").action == "allow"
    assert shell(policy, "cat x").action == "deny"
    assert "_note" not in json.loads(path.read_text())
    write(tmp_path, json.dumps({"_note": "for humans", "$schema": "x", "allow": []}))
    assert PermissionPolicy.load(path).decide("read_file", {}).action == "ask"


@pytest.mark.parametrize(
    ("content", "match", "rule"),
    [
        ("{not json", "not valid JSON: .* line 1", None),
        ("[]", "must be a JSON object", None),
        ('{"alow": ["x"]}', "unknown key 'alow'", None),
        ('{"default": "maybe"}', "\"default\" is 'maybe'", None),
        ('{"allow": "read_file"}', '"allow" must be a list', None),
        ('{"allow": [3]}', "a rule is a string", "3"),
        ('{"deny": ["shell(rm *"]}', "has no '\\)' at the end", "shell(rm *"),
        ('{"ask": [""]}', "it is empty", ""),
        ('{"ask": ["read file"]}', "cannot contain spaces", "read file"),
        ('{"allow": ["shell()"]}', "command pattern in parentheses is empty", "shell()"),
        ('{"allow": ["@tools"]}', "'@tools' is not a tool source", "@tools"),
        ('{"allow": ["@mcp(x)"]}', "a source rule takes no command pattern", "@mcp(x)"),
        ('{"allow": ["read_file(x)"]}', "only the command tools take", "read_file(x)"),
    ],
)
def test_config_errors_name_the_file_and_the_rule(
    tmp_path: Path, content: str, match: str, rule: str | None
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(PermissionConfigError, match=match) as info:
        PermissionPolicy.from_file(path)
    error = info.value
    assert isinstance(error, ConfigurationError)
    assert str(path) in str(error)
    assert error.origin == str(path)
    assert error.rule == rule
    if rule is not None:
        assert "A valid rule is" in str(error)


def test_a_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(PermissionConfigError, match=r"does not exist.*PERMISSIONS_CONFIG"):
        PermissionPolicy.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------- properties

_FRAGMENTS = st.sampled_from(
    [
        "echo", "ls", "git", "status", "rm", "-rf", "x", " ", " ", "&&", "||", ";", "|", "&",
        "\n", "(", ")", "{", "}", "'", '"', "\\", "#", "$", "$(", "`", "<(", ">", ">>", "2>&1",
        "<", "<<", "=", "FOO=1", "bash -c", "eval", "sh -c '", "$((", "${", "}", "*", "~",
    ]
)  # fmt: skip
_COMMANDS = st.lists(_FRAGMENTS | st.text(max_size=3), max_size=25).map("".join)
_PREFIX_ONLY = rules(allow=["shell(echo *)", "shell(ls *)", "shell(git *)", "shell(x *)"])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80) | _COMMANDS)
def test_split_command_never_raises(command: str) -> None:
    parts = split_command(command)
    assert all(isinstance(p, str) for p in parts)
    decision = shell(DEFAULT, command)
    assert decision.action in ("allow", "ask", "deny")
    assert set(decision.to_ask) <= {p.command for p in decision.parts}


@settings(max_examples=400, deadline=None)
@given(_COMMANDS, st.sampled_from(["$(", "`"]), _COMMANDS)
def test_prefix_rules_never_allow_a_substitution(before: str, marker: str, after: str) -> None:
    command = before + marker + after
    assert shell(_PREFIX_ONLY, command).action != "allow"
    grants = SessionGrants()
    grants.allow_command_pattern("shell", "echo *")
    assert shell(_PREFIX_ONLY, command, session=grants).action != "allow"
