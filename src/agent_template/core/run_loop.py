"""The run loop: model -> tool calls -> results -> model ... until a final answer.

The loop depends only on two small protocols, :class:`ModelClient` and :class:`ToolExecutor`;
the composition root hands it a ``ModelManager`` and a ``ToolManager``. It yields typed
:data:`~agent_template.models.RunEvent` values and records what it produced in a
:class:`RunState`, which keeps the partial answer when the run is cancelled or fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent_template.errors import AgentTemplateError, MaxTurnsExceededError, StorageError
from agent_template.models import (
    AssistantMessage,
    DoneEvent,
    ErrorEvent,
    ErrorOccurred,
    Message,
    MessageStatus,
    ModelCallFinished,
    ModelCallStarted,
    ModelEvent,
    ModelRequest,
    ResponseFinished,
    RunEvent,
    RunStatus,
    TextDelta,
    ToolCall,
    ToolDefinition,
    ToolExecFinished,
    ToolExecStarted,
    ToolResultEvent,
    ToolResultMessage,
    Usage,
    UsageEvent,
)

if TYPE_CHECKING:
    from agent_template.core.bus import EventBus
    from agent_template.core.hooks import HookContext, HookRegistry

log = logging.getLogger("agent_template.run")

__all__ = ["ModelClient", "RunConfig", "RunState", "ToolExecutor", "run_events"]


class ModelClient(Protocol):
    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...


class ToolExecutor(Protocol):
    def definitions(self) -> Sequence[ToolDefinition]: ...

    async def execute(self, call: ToolCall, context: Any = None) -> ToolResultMessage: ...


@dataclass(slots=True)
class RunConfig:
    max_turns: int = 20
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    # Other options of every request (ModelRequest fields: tool_choice, stop, top_p, seed,
    # response_format, parallel_tool_calls).
    model_settings: Mapping[str, Any] = field(default_factory=dict)
    context: Any = None  # handed to every tool call
    hooks: HookRegistry | None = None
    bus: EventBus | None = None
    session_id: str | None = None
    task_id: str | None = None  # the task, or for a run outside the scheduler, its run id
    user_id: str | None = None
    agent: str | None = None
    # Called with each batch of new messages before any consumer hears of them (the user
    # message first, then every assistant message and tool result, and partial output).
    on_messages: Callable[[list[Message]], Awaitable[None]] | None = None
    # Shapes each request before it is sent (context compression), and learns from the
    # usage the provider reports for it.
    prepare_request: Callable[[ModelRequest], Awaitable[ModelRequest]] | None = None
    on_usage: Callable[[ModelRequest, Usage], None] | None = None
    # Saves the text of an answer while it streams, at most every checkpoint_interval seconds.
    checkpoint: Callable[[str], Awaitable[None]] | None = None
    checkpoint_interval: float = 1.0
    # Awaited before each model call (MCP servers whose tool lists changed are re-listed);
    # the tools' definitions are read again after it.
    before_turn: Callable[[], Awaitable[None]] | None = None
    # When the run stops while tool calls wait (for a person's approval), the calls for which
    # this says True get no "cancelled" result: they stay open, to be answered on resume.
    keep_pending: Callable[[ToolCall], bool] | None = None


@dataclass(slots=True)
class RunState:
    """Everything a run produced so far: kept even when it is cancelled or fails.

    ``messages`` holds the conversation the model saw (history first) followed by the run's new
    messages; ``new_messages`` is the slice this run added.
    """

    messages: list[Message]
    start: int = 0
    usage: Usage = field(default_factory=Usage)
    turns: int = 0
    status: RunStatus | None = None
    output: str = ""
    error: AgentTemplateError | None = None
    saved: int = -1  # messages[:saved] are persisted; -1 means "from start"
    # Tool calls to run before the first model call: a run resumed from a history that
    # ends with them (their results are not in ``messages`` yet).
    pending_calls: list[ToolCall] = field(default_factory=list)

    @property
    def new_messages(self) -> list[Message]:
        return self.messages[self.start :]


_CANCELLED_RESULT = "The tool call was cancelled before it finished."


Execute = Callable[[ToolCall], Awaitable[ToolResultMessage]]


async def _run_tools(execute: Execute, calls: list[ToolCall]) -> list[ToolResultMessage]:
    """Run one turn's calls concurrently; on cancellation, unfinished calls get a result too."""
    if len(calls) == 1:
        try:
            return [await execute(calls[0])]
        except asyncio.CancelledError:
            raise _PartialResults([None]) from None
    tasks = [asyncio.ensure_future(execute(c)) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks)
        done = [t.result() if not t.cancelled() and t.exception() is None else None for t in tasks]
        raise _PartialResults(done) from None


def _executor(
    tools: ToolExecutor, config: RunConfig, hook_ctx: HookContext | None
) -> tuple[Execute, dict[str, float]]:
    """The tool-call function for this run (bare, or with hooks and bus events around it),
    and where it notes each call's own duration in milliseconds, by call id."""
    context = config.context
    hooks, bus = config.hooks, config.bus
    durations: dict[str, float] = {}
    observed_hooks = hooks is not None and (
        hooks.has("before_tool_call") or hooks.has("after_tool_call")
    )
    if not observed_hooks and bus is None:

        async def bare(call: ToolCall) -> ToolResultMessage:
            t0 = time.perf_counter()
            try:
                return await tools.execute(call, context)
            finally:
                durations[call.id] = (time.perf_counter() - t0) * 1000

        return bare, durations
    from agent_template.core.hooks import Veto

    sid, tid, uid = config.session_id, config.task_id, config.user_id

    async def observed(call: ToolCall) -> ToolResultMessage:
        veto: Veto | None = None
        if hooks is not None and hook_ctx is not None:
            checked = await hooks.before_tool_call(call, hook_ctx)
            if isinstance(checked, Veto):
                veto = checked
            else:
                call = checked
        if bus is not None:
            bus.publish(
                ToolExecStarted(
                    session_id=sid, task_id=tid, user_id=uid, call_id=call.id, name=call.name
                )
            )
        t0 = time.perf_counter()
        if veto is not None:
            result = ToolResultMessage(
                tool_call_id=call.id,
                name=call.name,
                content=f"The call was refused: {veto.reason}",
                is_error=True,
            )
        else:
            try:
                result = await tools.execute(call, context)
            finally:
                durations[call.id] = (time.perf_counter() - t0) * 1000
            if hooks is not None and hook_ctx is not None:
                result = await hooks.after_tool_call(call, result, hook_ctx)
        if bus is not None:
            bus.publish(
                ToolExecFinished(
                    session_id=sid,
                    task_id=tid,
                    user_id=uid,
                    call_id=call.id,
                    name=call.name,
                    duration_ms=durations.get(call.id, 0.0),
                    is_error=result.is_error,
                    vetoed=veto is not None,
                )
            )
        return result

    return observed, durations


class _PartialResults(asyncio.CancelledError):
    """Cancellation that carries the tool results finished before it."""

    def __init__(self, results: list[ToolResultMessage | None]) -> None:
        super().__init__()
        self.results = results


async def _persist(state: RunState, config: RunConfig) -> None:
    save = config.on_messages
    if save is None:
        return
    messages = state.messages
    if state.saved < 0:
        state.saved = state.start
    if state.saved < len(messages):
        batch = messages[state.saved :]
        await save(batch)
        state.saved += len(batch)


async def _persist_quietly(state: RunState, config: RunConfig) -> AgentTemplateError | None:
    """Persist on the way out of a cancelled or failed run; the failure, if any, is returned
    (and logged) rather than raised, so it cannot mask the run's own outcome."""
    try:
        await _persist(state, config)
    except Exception as exc:
        log.error("could not store the partial output of a run", exc_info=exc)
        return _storage_failure(exc)
    return None


async def _settle(saving: asyncio.Task[None] | None) -> None:
    """Let a checkpoint in flight land (its failure is the caller's to report, or moot)
    before the partial answer is stored, so that it can never overwrite it."""
    if saving is not None:
        await asyncio.gather(saving, return_exceptions=True)


class _CheckpointFailed(Exception):
    """Saving the streaming answer failed: a storage error, not the model's."""


def _close_partial(state: RunState, text: list[str], status: MessageStatus) -> None:
    if text:
        state.messages.append(AssistantMessage(content="".join(text), status=status))


def _failed(
    state: RunState, config: RunConfig, exc: AgentTemplateError, source: str
) -> list[RunEvent]:
    """End a run as failed: the events that say so, in order (``error`` then ``done``)."""
    state.status, state.error = "failed", exc
    bus = config.bus
    if bus is not None:
        bus.publish(
            ErrorOccurred(
                session_id=config.session_id,
                task_id=config.task_id,
                user_id=config.user_id,
                code=exc.code,
                message=str(exc),
                source=source,
            )
        )
    return [
        ErrorEvent(code=exc.code, message=str(exc), retryable=_retryable(exc)),
        DoneEvent(status="failed", usage=state.usage, turns=state.turns),
    ]


async def run_events(
    model: ModelClient,
    tools: ToolExecutor | None,
    state: RunState,
    config: RunConfig,
) -> AsyncIterator[RunEvent]:
    """Drive one run, yielding its events; ``state.messages`` must end with the user message.

    Provider failures end the run with an ``error`` then a ``done`` event (status ``failed``),
    and so do storage failures (code ``storage_*``, never reported as the model's); the
    partial answer is kept. Cancellation (of the consuming task, or closing this iterator)
    keeps the partial answer, marked ``cancelled``, with a result for every tool call so the
    history stays valid.
    """
    definitions = tools.definitions() if tools is not None else ()
    messages = state.messages
    hooks, bus = config.hooks, config.bus
    hook_ctx: HookContext | None = None
    if hooks:
        from agent_template.core.hooks import HookContext

        hook_ctx = HookContext(config.session_id, config.agent, config.task_id, config.user_id)
    else:
        hooks = None
    execute, durations = _executor(tools, config, hook_ctx) if tools is not None else (None, {})
    sid, tid, uid = config.session_id, config.task_id, config.user_id
    announce_calls = bus is not None and bus.wants("model_call_started")
    persist = config.on_messages is not None
    if persist:
        try:
            await _persist(state, config)  # the user message, before anyone hears of the run
        except Exception as caught:
            for event in _failed(state, config, _storage_failure(caught), "storage"):
                yield event
            return
    extra: dict[str, Any] = {}
    if config.model_settings:  # built once; most runs have none and skip the unpacking
        extra = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        extra.update(config.model_settings)
    # A resumed run (after an approval answered across a restart) starts with the calls of
    # its last turn instead of a model call.
    pending: list[ToolCall] = state.pending_calls
    state.pending_calls = []
    before_turn = config.before_turn
    for turn in range(config.max_turns):
        if not pending:
            if before_turn is not None:
                await before_turn()
                definitions = tools.definitions() if tools is not None else ()
            if extra:
                request = ModelRequest(messages, definitions, config.model, **extra)
            else:
                request = ModelRequest(
                    messages, definitions, config.model, config.temperature, config.max_tokens
                )
            if config.prepare_request is not None:
                request = await config.prepare_request(request)
            if hooks is not None and hook_ctx is not None:
                request = await hooks.before_model_call(request, hook_ctx)
            if announce_calls:
                bus.publish(ModelCallStarted(session_id=sid, task_id=tid, user_id=uid, turn=turn))  # type: ignore[union-attr]
            t_model = time.perf_counter()
            text: list[str] = []
            usage = Usage()
            finished: ResponseFinished | None = None
            stream = model.stream(request)
            checkpoint = config.checkpoint
            next_checkpoint = time.monotonic() + config.checkpoint_interval
            # The checkpoint being written, in the background: the stream never waits for the
            # database, and at most one save per run is in flight.
            saving: asyncio.Task[None] | None = None
            try:
                async for event in stream:
                    kind = type(event)
                    if kind is TextDelta:
                        text.append(event.text)  # type: ignore[union-attr]
                        if checkpoint is not None and time.monotonic() >= next_checkpoint:
                            if saving is not None and saving.done():
                                failed = saving.exception()
                                saving = None
                                if failed is not None:
                                    raise _CheckpointFailed() from failed
                            if saving is None:
                                saving = asyncio.ensure_future(checkpoint("".join(text)))
                                next_checkpoint = time.monotonic() + config.checkpoint_interval
                    elif kind is UsageEvent:
                        usage = usage + event.usage  # type: ignore[union-attr]
                    elif kind is ResponseFinished:
                        finished = event  # type: ignore[assignment]
                        continue  # announced once the message is stored
                    yield event
                if saving is not None:  # settled before the answer is stored, never after
                    landing, saving = saving, None
                    try:
                        await landing
                    except Exception as caught:
                        raise _CheckpointFailed() from caught
            except _CheckpointFailed as checkpoint_failed:
                await _settle(saving)
                state.usage = state.usage + usage
                _close_partial(state, text, "failed")
                cause = checkpoint_failed.__cause__
                error = _storage_failure(
                    cause if isinstance(cause, Exception) else checkpoint_failed
                )
                if persist:
                    await _persist_quietly(state, config)
                for event in _failed(state, config, error, "storage"):
                    yield event
                return
            except Exception as caught:
                # An unexpected exception (a provider bug, garbage the SDK could not parse) ends
                # the run the same way as a known provider failure: reported, partial kept.
                exc = caught if isinstance(caught, AgentTemplateError) else _unexpected(caught)
                await _settle(saving)
                state.usage = state.usage + usage
                _close_partial(state, text, "failed")
                if persist:
                    await _persist_quietly(state, config)
                if bus is not None:
                    bus.publish(
                        ModelCallFinished(
                            session_id=sid,
                            task_id=tid,
                            user_id=uid,
                            turn=turn,
                            provider=getattr(exc, "provider", None),
                            latency_ms=(time.perf_counter() - t_model) * 1000,
                            error=exc.code,
                        )
                    )
                for event in _failed(state, config, exc, "model"):
                    yield event
                return
            except BaseException:  # cancelled, or this iterator was closed
                await _settle(saving)
                state.usage = state.usage + usage
                _close_partial(state, text, "cancelled")
                state.status = "cancelled"
                if persist:
                    await _persist_quietly(state, config)
                raise
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            state.usage = state.usage + usage
            state.turns += 1
            if config.on_usage is not None:
                config.on_usage(request, usage)
            if finished is None:  # a provider that broke its contract; keep what it said
                finished = ResponseFinished(
                    finish_reason="stop", message=AssistantMessage(content="".join(text))
                )
            message = finished.message
            messages.append(message)
            if persist:
                not_saved = await _persist_quietly(state, config)
                if not_saved is not None:
                    for event in _failed(state, config, not_saved, "storage"):
                        yield event
                    return
            yield finished
            if bus is not None:
                bus.publish(
                    ModelCallFinished(
                        session_id=sid,
                        task_id=tid,
                        user_id=uid,
                        turn=turn,
                        provider=message.provider,
                        model=message.model,
                        latency_ms=(time.perf_counter() - t_model) * 1000,
                        usage=usage,
                    )
                )
            if hooks is not None and hook_ctx is not None:
                await hooks.after_model_call(message, usage, hook_ctx)
            calls = message.tool_calls
            if not calls:
                state.output = message.text
                state.status = "completed"
                yield DoneEvent(
                    status="completed", output=state.output, usage=state.usage, turns=state.turns
                )
                return
            pending = calls
        calls, pending = pending, []
        try:
            if execute is not None:
                results = await _run_tools(execute, calls)
            else:
                results = [_missing_tools(c) for c in calls]
        except _PartialResults as partial:
            keep = config.keep_pending
            for call, result in zip(calls, partial.results, strict=True):
                if result is None and keep is not None and keep(call):
                    continue  # it waits for an answer that resumes the run later
                messages.append(result or _cancelled(call))
            state.status = "cancelled"
            if persist:
                await _persist_quietly(state, config)
            raise asyncio.CancelledError from None
        except BaseException:
            keep = config.keep_pending
            messages.extend(_cancelled(c) for c in calls if keep is None or not keep(c))
            state.status = "cancelled"
            if persist:
                await _persist_quietly(state, config)
            raise
        messages.extend(results)  # all at once: a consumer that stops early loses none
        if persist:
            not_saved = await _persist_quietly(state, config)
            if not_saved is not None:
                for event in _failed(state, config, not_saved, "storage"):
                    yield event
                return
        for result in results:
            yield ToolResultEvent(
                call_id=result.tool_call_id,
                name=result.name,
                content=result.text,
                is_error=result.is_error,
                duration_ms=durations.pop(result.tool_call_id, 0.0),
            )
    for event in _failed(state, config, MaxTurnsExceededError(config.max_turns), "run"):
        yield event


def _storage_failure(exc: BaseException) -> AgentTemplateError:
    """A failure to store the run's messages, as the error the run ends with."""
    if isinstance(exc, AgentTemplateError):
        return exc
    return StorageError(
        f"The conversation could not be saved ({type(exc).__name__}: {exc}). The answer so far "
        "is kept in memory only; check the database and retry."
    )


def _unexpected(exc: Exception) -> AgentTemplateError:
    log.error("model stream failed unexpectedly", exc_info=exc)
    error = AgentTemplateError(
        f"The model call failed unexpectedly ({type(exc).__name__}: {exc}). "
        "Retry; if it keeps happening, check the log file and report it."
    )
    error.code = "unexpected_error"
    return error


def _retryable(exc: AgentTemplateError) -> bool:
    return bool(getattr(exc, "retryable", False))


def _cancelled(call: ToolCall) -> ToolResultMessage:
    return ToolResultMessage(
        tool_call_id=call.id, name=call.name, content=_CANCELLED_RESULT, is_error=True
    )


def _missing_tools(call: ToolCall) -> ToolResultMessage:
    return ToolResultMessage(
        tool_call_id=call.id,
        name=call.name,
        content=f"No tools are available in this run, so '{call.name}' cannot be called.",
        is_error=True,
    )
