"""Context compression: keeps each model request within the model's context window.

:class:`ContextCompressor` is the spec's MessageCompressor. The run loop hands it every request
(``prepare``) and the usage the provider reports for it (``observe``). While the request's
estimated size stays under ``threshold * max_context_length`` it only appends a line to the
instructions telling the agent how full its context is; above that it compacts a copy of the
request with the configured strategies, in order, until it fits:

* ``drop_tool_outputs`` replaces old tool results' content with a note of their size;
* ``summarize`` has the model summarise the old messages into one marked message;
* ``truncate`` drops the oldest messages.

What is always kept: the leading system messages, the last user message, the latest tool-call
group, and the latest ``keep_recent`` turns as long as they take at most three quarters of the
budget (a *turn* is a user message with every message after it up to the next user message;
messages before the first user message count as one turn). A tool call is never separated from
its results. The caller's messages are never changed; only the outgoing request is.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent_template.models import (
    Message,
    ModelRequest,
    SystemMessage,
    ToolDefinition,
    Usage,
)
from agent_template.models.bus_events import ContextCompacted
from agent_template.services._compaction import (
    MESSAGE_OVERHEAD,
    SUMMARY_PREFIX,
    CompactionResult,
    CompactionState,
    TokenCounter,
    anchor,
    leading_system,
    paired,
    split,
    working_set,
)
from agent_template.services.compaction_strategies import (
    CompactionContext,
    CompressionStrategy,
    DropToolOutputs,
    Summarize,
    Truncate,
)
from agent_template.utils.tokens import estimate_tokens

__all__ = [
    "DEFAULT_STRATEGIES",
    "STATE_VERSION",
    "CompactionContext",
    "CompactionResult",
    "CompactionState",
    "CompressionStrategy",
    "ContextCompressor",
    "DropToolOutputs",
    "Summarize",
    "Truncate",
]

log = logging.getLogger("agent_template.compressor")

_STRATEGIES: dict[str, type[DropToolOutputs | Summarize | Truncate]] = {
    "drop_tool_outputs": DropToolOutputs,
    "summarize": Summarize,
    "summarise": Summarize,
    "truncate": Truncate,
}
DEFAULT_STRATEGIES = ("drop_tool_outputs", "summarize", "truncate")
_MAX_SESSIONS = 1024  # sessions whose summary is kept in memory (the least recent go first)
_MAX_RESULTS = 32  # compactions kept in ``compactions`` for inspection
_MAX_SENT = 64  # prepared requests remembered until their usage is observed
STATE_VERSION = 1  # the format of dump_state and load_state


class ContextCompressor:
    """Keeps requests within the context window; see the module docstring for the rules.

    Args:
        max_context_length: The model's context window, in tokens.
        threshold: Compaction starts when a request's estimate exceeds this share of the window.
        model: Writes summaries: anything with ``async stream(ModelRequest)`` (a
            ``ModelManager`` or a provider). Without one, ``summarize`` does nothing.
        strategies: Names (``drop_tool_outputs``, ``summarize``, ``truncate``) or
            :class:`CompressionStrategy` objects, tried in order. Should the result still be too
            large (say, the summary failed), the oldest messages are truncated anyway.
        keep_recent: Latest turns kept verbatim (see the module docstring).
        enabled: When False, :meth:`prepare` passes requests through untouched.
        bus: Where :class:`~agent_template.models.ContextCompacted` events go.
        reserve_output_tokens: Room left for the answer: the budget is at most the window
            minus this.
        announce_usage: Tell the agent, in its instructions, how full its context is.

    Raises:
        ConfigurationError: For an unknown strategy name or an impossible setting.
    """

    def __init__(
        self,
        *,
        max_context_length: int,
        threshold: float = 0.8,
        model: Any = None,
        strategies: Sequence[str | CompressionStrategy] = DEFAULT_STRATEGIES,
        keep_recent: int = 4,
        enabled: bool = True,
        bus: Any = None,
        reserve_output_tokens: int = 0,
        announce_usage: bool = True,
    ) -> None:
        from agent_template.errors import ConfigurationError

        if max_context_length < 1 or not 0 < threshold <= 1 or keep_recent < 0:
            raise ConfigurationError(
                "ContextCompressor needs max_context_length >= 1, 0 < threshold <= 1 and "
                f"keep_recent >= 0 (got {max_context_length}, {threshold}, {keep_recent})."
            )
        self.max_context_length = max_context_length
        self.threshold = threshold
        self.model = model
        self.keep_recent = keep_recent
        self.enabled = enabled
        self.bus = bus
        self.reserve_output_tokens = reserve_output_tokens
        self.announce_usage = announce_usage
        self.strategies: list[CompressionStrategy] = []
        for spec in strategies:
            if isinstance(spec, str):
                if spec not in _STRATEGIES:
                    known = ", ".join(sorted(_STRATEGIES))
                    raise ConfigurationError(f"Unknown compression strategy {spec!r}; use {known}.")
                spec = _STRATEGIES[spec]()
            self.strategies.append(spec)
        self.limit = max(
            1, min(int(threshold * max_context_length), max_context_length - reserve_output_tokens)
        )
        self.compactions: list[CompactionResult] = []
        self._counter = TokenCounter()
        self._states: OrderedDict[str, CompactionState] = OrderedDict()
        self._sent: dict[int, tuple[ModelRequest, int]] = {}
        self._counts = {"compactions": 0, "manual": 0, "summaries": 0, "reused": 0, "errors": 0}
        self._saved = 0
        summarises = model is not None and any(isinstance(s, Summarize) for s in self.strategies)
        self._verb = "summarised" if summarises else "compacted"

    # ------------------------------------------------------------------ estimates

    @property
    def ratio(self) -> float:
        """Reported tokens per estimated token, learnt by :meth:`observe` (1.0 at first)."""
        return self._counter.ratio

    def estimate(self, messages: Sequence[Message], tools: Sequence[ToolDefinition] = ()) -> int:
        """Calibrated token estimate of ``messages`` plus ``tools``."""
        counter = self._counter
        return counter.calibrated(counter.messages(messages) + counter.tools(tools))

    def observe(self, request: ModelRequest, usage: Usage) -> None:
        """Calibrate estimates from the input tokens a provider reported for ``request``."""
        if usage.input_tokens <= 0:
            return
        entry = self._sent.pop(id(request), None)
        if entry is not None and entry[0] is request:
            raw = entry[1]
        else:
            raw = self._counter.messages(request.messages) + self._counter.tools(request.tools)
        self._counter.observe(raw, usage.input_tokens / max(usage.requests, 1))

    # ------------------------------------------------------------------ the hot path

    async def prepare(
        self, request: ModelRequest, *, session_id: str | None = None
    ) -> ModelRequest:
        """Return ``request`` fitted to the budget, as a new request; ``request`` is not changed.

        Under the budget only the usage line is added (when ``announce_usage``); disabled, the
        request is returned as it is.
        """
        if not self.enabled:
            return request
        counter = self._counter
        messages: Sequence[Message] = request.messages
        tools_raw = counter.tools(request.tools)
        raw = counter.messages(messages) + tools_raw
        if counter.calibrated(raw) > self.limit:
            reused = self._reuse(messages, tools_raw, session_id)
            if reused is None:
                compacted = await self._compact(messages, tools_raw, session_id, manual=False)
                reused = compacted.messages
            messages = reused
            raw = counter.messages(messages) + tools_raw
        elif not self.announce_usage:
            return request
        if self.announce_usage:
            messages, raw = self._with_usage_line(messages, raw)
        prepared = replace(request, messages=messages)  # every other option kept as it was
        if len(self._sent) >= _MAX_SENT:
            del self._sent[next(iter(self._sent))]
        self._sent[id(prepared)] = (prepared, raw)
        return prepared

    def _with_usage_line(self, messages: Sequence[Message], raw: int) -> tuple[list[Message], int]:
        used = self._counter.calibrated(raw)
        window = self.max_context_length
        line = (
            f"\n\n[Context: about {used:,} of {window:,} tokens used ({used * 100 // window}%); "
            f"older turns are {self._verb} above {self.limit * 100 // window}%.]"
        )
        out = list(messages)
        first = out[0] if out else None
        if isinstance(first, SystemMessage):
            out[0] = SystemMessage(content=first.content + line)
        else:
            out.insert(0, SystemMessage(content=line.lstrip()))
            raw += MESSAGE_OVERHEAD
        return out, raw + estimate_tokens(line)

    def _reuse(
        self, messages: Sequence[Message], tools_raw: int, session_id: str | None
    ) -> list[Message] | None:
        """The request with the session's standing summary, if that fits."""
        head_len = leading_system(messages)
        state = self._state_for(session_id, messages[head_len:])
        if state is None:
            return None
        work, _ = working_set(messages[head_len:], (state.message, state.covered))
        out = [*messages[:head_len], *work]
        counter = self._counter
        if counter.calibrated(counter.messages(out) + tools_raw) > self.limit:
            return None
        self._counts["reused"] += 1
        return out

    def _state_for(self, session_id: str | None, body: Sequence[Message]) -> CompactionState | None:
        state = self._states.get(session_id) if session_id is not None else None
        return state if state is not None and state.matches(body) else None

    # ------------------------------------------------------------------ compaction

    async def compact(
        self,
        messages: Sequence[Message],
        *,
        session_id: str | None = None,
        tools: Sequence[ToolDefinition] = (),
    ) -> CompactionResult:
        """Compact ``messages`` now, whatever their size (also when ``enabled`` is False).

        Every strategy but the last runs; the last (``truncate`` by default) only if the result
        is still too large. Instructions, the latest turns and tool-call pairs are kept as in
        :meth:`prepare`, and a summary written here is reused by later requests of the session.
        """
        return await self._compact(messages, self._counter.tools(tools), session_id, manual=True)

    async def _compact(
        self, messages: Sequence[Message], tools_raw: int, session_id: str | None, *, manual: bool
    ) -> CompactionResult:
        counter = self._counter
        head_len = leading_system(messages)
        head, body = list(messages[:head_len]), messages[head_len:]
        state = self._state_for(session_id, body)
        work, origin = working_set(body, (state.message, state.covered) if state else None)
        fixed = counter.messages(head) + tools_raw
        before = counter.calibrated(tools_raw + counter.messages(messages))
        room = self.limit - counter.calibrated(fixed)
        tail_start, pinned = split(counter, work, 1 if state else 0, room, self.keep_recent)
        keep = [work[pinned]] if pinned is not None else []
        region = [m for i, m in enumerate(work[:tail_start]) if i != pinned]
        tail = work[tail_start:]
        budget = self.limit - counter.calibrated(fixed + counter.messages(keep + tail))
        ctx = CompactionContext(counter, self.model, self.limit, region, session_id, manual)
        applied: list[str] = []
        errors: list[str] = []
        strategies = self.strategies
        for index, strategy in enumerate(strategies):
            last = index == len(strategies) - 1
            # A manual compaction runs every strategy but a last fallback even when it fits.
            skippable = not manual or (last and index > 0)
            if not region or (skippable and ctx.tokens(region) <= budget):
                break
            try:
                out = paired(await strategy.apply(region, budget, ctx))
            except Exception as exc:  # a failed summary must not fail the run: truncation follows
                log.warning(
                    "context compression %r failed (%r); trying the next strategy",
                    strategy.name,
                    exc,
                )
                errors.append(f"{strategy.name}: {exc!r}")
                continue
            if len(out) != len(region) or any(a is not b for a, b in zip(out, region, strict=True)):
                applied.append(strategy.name)
            region = out
        if region and ctx.tokens(region) > budget:  # the safety net: the request must fit
            region = await Truncate().apply(region, budget, ctx)
            if "truncate" not in applied:
                applied.append("truncate")
        final = [*head, *region, *keep, *tail]
        after = counter.calibrated(tools_raw + counter.messages(final))
        if after > self.limit:
            log.warning(
                "the latest turn alone needs about %d tokens, over the limit of %d",
                after,
                self.limit,
            )
        summary = ctx.summary
        if summary is not None and not any(m.content == SUMMARY_PREFIX + summary for m in region):
            summary = None  # truncated away after all
        if summary is not None and session_id is not None:
            base = state.covered if state else 0
            later = [o for o in origin[tail_start:] if o >= base]
            covered = later[0] if later else len(body)
            if covered > 0:
                self._remember(session_id, CompactionState(summary, covered, anchor(body, covered)))
        result = CompactionResult(
            messages=final,
            tokens_before=before,
            tokens_after=after,
            limit=self.limit,
            strategy="+".join(applied) or "none",
            summarized_messages=ctx.summarized,
            dropped_messages=ctx.dropped,
            cleared_outputs=ctx.cleared,
            manual=manual,
            summary=summary,
            errors=errors,
        )
        self._record(result, session_id)
        return result

    def _record(self, result: CompactionResult, session_id: str | None) -> None:
        counts = self._counts
        counts["compactions"] += 1
        counts["manual"] += result.manual
        counts["summaries"] += result.summary is not None
        counts["errors"] += bool(result.errors)
        self._saved += max(result.tokens_before - result.tokens_after, 0)
        self.compactions.append(result)
        del self.compactions[:-_MAX_RESULTS]
        if self.bus is not None:
            self.bus.publish(
                ContextCompacted(
                    session_id=session_id,
                    tokens_before=result.tokens_before,
                    tokens_after=result.tokens_after,
                    strategy=result.strategy,
                    summarized_messages=result.summarized_messages,
                    dropped_messages=result.dropped_messages,
                    limit=result.limit,
                    manual=result.manual,
                )
            )

    # ------------------------------------------------------------------ state

    def _remember(self, session_id: str, state: CompactionState) -> None:
        self._states[session_id] = state
        self._states.move_to_end(session_id)
        while len(self._states) > _MAX_SESSIONS:
            self._states.popitem(last=False)

    def compaction_state(self, session_id: str) -> CompactionState | None:
        """The session's standing summary, or None."""
        return self._states.get(session_id)

    def forget(self, session_id: str) -> None:
        """Drop the session's standing summary (say, when the session is deleted)."""
        self._states.pop(session_id, None)

    def dump_state(self, session_id: str | None = None) -> dict[str, Any]:
        """Standing summaries as a JSON-able dict: every session's, or only ``session_id``'s."""
        ids = list(self._states) if session_id is None else [session_id]
        sessions = {sid: self._states[sid].to_dict() for sid in ids if sid in self._states}
        return {"version": STATE_VERSION, "sessions": sessions}

    def load_state(self, data: Mapping[str, Any]) -> None:
        """Restore summaries saved by :meth:`dump_state` (merged with those in memory).

        Raises:
            ValueError: If ``data`` is not in the format :meth:`dump_state` writes.
        """
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown compaction state version {data.get('version')!r}")
        for sid, item in dict(data.get("sessions") or {}).items():
            self._remember(str(sid), CompactionState.from_dict(item))

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and status pages."""
        return {
            **self._counts,
            "tokens_saved": self._saved,
            "ratio": round(self._counter.ratio, 3),
            "sessions": len(self._states),
            "limit": self.limit,
        }
