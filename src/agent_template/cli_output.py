"""How the CLI talks to a person: the answer on stdout, everything else briefly on stderr."""

from __future__ import annotations

import sys
from typing import Any

import typer

__all__ = ["Printer", "cli_hint", "clip", "err", "style", "with_cli_hint"]

# What to do about an error with this command line's options, by the error's code.
_HINTS = {
    "provider": " Or choose another provider with --provider.",
    "all_providers_failed": " Or choose another provider with --provider.",
    "missing_api_key": " Or choose another provider with --provider.",
    "storage_migration_failed": " Run `agent-template db upgrade` to see the details.",
}


def err(message: str) -> None:
    typer.echo(message, err=True)


def style(text: str, **kwargs: Any) -> str:
    return typer.style(text, **kwargs) if sys.stderr.isatty() else text


def cli_hint(code: str) -> str:
    """The command-line advice for an error code (empty when there is none)."""
    hint = _HINTS.get(code)
    if hint is None and code.startswith("provider_") and code != "provider_bad_request":
        hint = _HINTS["provider"]
    return hint or ""


_NEUTRAL_ADVICE = "or choose another provider."


def with_cli_hint(message: str, code: str) -> str:
    """``message`` with the advice its code has on this command line, said once."""
    hint = cli_hint(code)
    if hint == _HINTS["provider"] and message.endswith(_NEUTRAL_ADVICE):
        return message.removesuffix(_NEUTRAL_ADVICE) + "or choose another provider with --provider."
    return message + hint


class Printer:
    """Renders run events: text on stdout, tool calls and errors on stderr."""

    def __init__(self, json_events: bool) -> None:
        self.json_events = json_events
        self.at_line_start = True
        self.error_shown = False

    def show(self, event: Any) -> None:
        out = sys.stdout
        if self.json_events:
            out.write(event.model_dump_json() + "\n")
            out.flush()
            return
        kind = event.type
        if kind == "text_delta":
            out.write(event.text)
            out.flush()
            self.at_line_start = event.text.endswith("\n")
        elif kind == "tool_call_finished":
            self._break_line()
            err(style(f"-> {event.call.name}({event.call.arguments})", fg="cyan"))
        elif kind == "tool_result":
            mark = "error" if event.is_error else "result"
            err(style(f"<- {event.name} {mark}: {clip(event.content)}", fg="cyan"))
        elif kind == "queued":
            err(style("[waiting for the session's current run to finish]", dim=True))
        elif kind == "approval_request":
            self._break_line()
            parts = f" ({'; '.join(event.parts)})" if event.parts else ""
            err(style(f"?? {event.tool} needs your approval{parts}: {event.reason}", fg="yellow"))
        elif kind == "approval_resolved":
            err(style(f"[{event.decision}]", dim=True))
        elif kind == "subagent":
            inner = event.event
            if inner.get("type") == "tool_call_finished":
                call = inner.get("call", {})
                err(style(f"   [{event.agent}] -> {call.get('name')}", dim=True))
            elif inner.get("type") == "done":
                err(style(f"   [{event.agent} {inner.get('status')}]", dim=True))
        elif kind == "error":
            self._break_line()
            err(style(f"Error: {with_cli_hint(event.message, event.code)}", fg="red"))
            self.error_shown = True
        elif kind == "done":
            self._break_line()
            u = event.usage
            calls = "call" if u.requests == 1 else "calls"
            err(
                style(
                    f"[{u.input_tokens} input + {u.output_tokens} output tokens, "
                    f"{u.requests} model {calls}]",
                    dim=True,
                )
            )

    def compacted(self, event: Any) -> None:
        """Say when the context was compacted, with the token counts."""
        if self.json_events:
            sys.stdout.write(event.model_dump_json() + "\n")
            return
        self._break_line()
        kind = "manual compaction" if event.manual else "context compacted"
        err(
            style(
                f"[{kind}: about {event.tokens_before} -> {event.tokens_after} tokens "
                f"({event.strategy}); limit {event.limit}]",
                dim=True,
            )
        )

    def _break_line(self) -> None:
        if not self.at_line_start:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.at_line_start = True

    def finish(self) -> None:
        if not self.json_events:
            self._break_line()


def clip(text: str, limit: int = 200) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


APPROVAL_KEYS = {"y": "approve", "yes": "approve", "n": "deny", "no": "deny", "a": "always"}


def ask_approval(event: Any) -> tuple[str, str | None]:
    """Ask at the terminal whether a tool call may run: (decision, note for the model).

    Without a terminal to ask (input is piped, or CI), the answer is deny, said plainly.
    """
    if not sys.stdin.isatty():
        err(
            style(
                "   denied: no terminal to ask. Allow the tool in PERMISSIONS_CONFIG to run it "
                "unattended.",
                fg="yellow",
            )
        )
        return "deny", "Nobody was at the terminal to approve it."
    try:
        arguments = (
            event.arguments if len(event.arguments) <= 400 else event.arguments[:397] + "..."
        )
        err(f"   {event.tool}({arguments})")
        answer = input("   Run it? [y]es / [n]o / [a]lways for this session: ").strip().lower()
    except EOFError:
        return "deny", "Nobody answered at the terminal."
    decision = APPROVAL_KEYS.get(answer or "n", "deny")
    return decision, None
