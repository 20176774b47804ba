"""Function tools: the ``@tool`` decorator and the :class:`ToolManager` registry.

A tool's JSON schema comes from its type hints and its Google-style docstring, through
Pydantic. Whatever goes wrong in a tool call (unknown tool, invalid arguments, an exception, a
timeout) comes back as an error result that the model can read and correct; it never ends the
run.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agent_template.errors import (
    ConfigurationError,
    ToolArgumentsError,
    ToolNotFoundError,
    ToolTimeoutError,
)
from agent_template.models import (
    Content,
    DataPart,
    ImagePart,
    ResourcePart,
    TextPart,
    ToolCall,
    ToolContext,
    ToolDefinition,
    ToolResultMessage,
)
from agent_template.services._threads import run_in_thread

__all__ = ["Authorizer", "FunctionTool", "Tool", "ToolContext", "ToolManager", "tool"]

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)(?:\s*\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):\s*$"
)


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before the first section) and each argument's description."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        head = _SECTION.match(line)
        if head:
            section, current = head.group(1), None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            arg = _ARG_LINE.match(line)
            if arg and not line.startswith("        "):
                current = arg.group(1).lstrip("*")
                params[current] = arg.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
    return "\n".join(summary).strip(), params


class Tool:
    """What the registry holds: anything the model can call by name.

    Subclasses set ``name``, ``description`` and ``definition`` (the schema the model sees)
    and implement :meth:`__call__`, which gets the model's raw JSON arguments and the call's
    :class:`ToolContext` and returns the result: a string, content parts (a list of
    :data:`~agent_template.models.ContentPart`), or any value, rendered as JSON. Raising
    :class:`~agent_template.errors.ToolArgumentsError` tells the model its arguments were wrong;
    any other exception becomes an error result too.

    ``timeout`` (seconds, or None for the registry's default) bounds each call;
    ``takes_context`` says whether the tool reads the context (so it gets its own copy);
    ``source`` says where the tool comes from (``function``, ``builtin``, ``mcp``,
    ``subagent``), for listings.
    """

    __slots__ = ()

    name: str
    description: str
    definition: ToolDefinition
    timeout: float | None
    takes_context: bool = True
    runs_in_thread: bool = False  # a timed-out call may keep running in its worker thread
    source: str = "function"

    async def __call__(self, arguments: str, context: ToolContext | None = None) -> Any:
        raise NotImplementedError

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """Check the model's JSON arguments; here, only that they are a JSON object.

        Raises:
            ToolArgumentsError: in words the model can act on.
        """
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError as exc:
            raise ToolArgumentsError(
                self.name, f"the arguments are not valid JSON ({exc}). Send a JSON object."
            ) from None
        if not isinstance(parsed, dict):
            raise ToolArgumentsError(
                self.name, "the arguments must be a JSON object. Send a JSON object."
            )
        return parsed

    @property
    def origin(self) -> str:
        """Where the tool comes from, for messages about it."""
        return f"{type(self).__name__}({self.name!r})"


class FunctionTool(Tool):
    """A Python function the model can call.

    Args:
        fn: the function, sync or async.
        name: the tool's name for the model; the function's name by default.
        description: overrides the docstring's summary.
        timeout: seconds a call may take; the manager's default when None.
        inline: run a sync function on the event loop instead of a worker thread. Only for
            quick functions that never block (no I/O, no heavy computation).
    """

    __slots__ = (
        "_context_param",
        "_field_names",
        "args_model",
        "definition",
        "description",
        "fn",
        "inline",
        "is_async",
        "name",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        inline: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.timeout = timeout
        self.inline = inline
        summary, arg_docs = _parse_docstring(fn.__doc__)
        self.description = description or summary
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        self._context_param: str | None = None
        for pname, param in inspect.signature(fn).parameters.items():
            annotation = hints.get(pname, Any)
            if annotation is ToolContext:
                self._context_param = pname
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
        self.args_model: type[BaseModel] = create_model(
            f"{self.name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        self._field_names = tuple(fields)
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.definition = ToolDefinition(
            name=self.name, description=self.description, parameters=schema
        )

    def parse_arguments(self, arguments: str) -> dict[str, Any]:
        """Validate the model's JSON arguments.

        Raises:
            ToolArgumentsError: listing every problem, in words the model can act on.
        """
        try:
            parsed = self.args_model.model_validate_json(arguments or "{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolArgumentsError(
                self.name, f"invalid arguments ({problems}). Fix them and call the tool again."
            ) from None
        return {name: getattr(parsed, name) for name in self._field_names}

    async def __call__(self, arguments: str, context: ToolContext | None = None) -> Any:
        kwargs = self.parse_arguments(arguments)
        if self._context_param is not None:
            kwargs[self._context_param] = context or ToolContext()
        if self.is_async:
            return await self.fn(**kwargs)
        if self.inline:
            return self.fn(**kwargs)
        return await run_in_thread(self.fn, kwargs)

    @property
    def takes_context(self) -> bool:  # type: ignore[override]
        return self._context_param is not None

    @property
    def runs_in_thread(self) -> bool:  # type: ignore[override]
        return not self.is_async and not self.inline

    @property
    def origin(self) -> str:
        """Where the function is defined (``module.qualname``), for messages."""
        fn = self.fn
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

    def __repr__(self) -> str:
        return f"FunctionTool({self.name!r})"


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    inline: bool = False,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    inline: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a function into a tool; use bare (``@tool``) or with options (``@tool(timeout=5)``).

    Sync functions run in a worker thread so a blocking tool never stalls other runs; pass
    ``inline=True`` for quick pure functions.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, timeout=timeout, inline=inline)

    return wrap(fn) if fn is not None else wrap


def _render(value: Any) -> Content:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, _PART_TYPES) for v in value):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


_PART_TYPES = (TextPart, ImagePart, ResourcePart, DataPart)

ToolLike = Tool | Callable[..., Any]


_log = logging.getLogger("agent_template.tools")


def _same(a: Tool, b: Tool) -> bool:
    """The same tool registered again (the same function, or the very same object)."""
    if a is b:
        return True
    return isinstance(a, FunctionTool) and isinstance(b, FunctionTool) and a.fn is b.fn


class Authorizer(Protocol):
    """Decides whether a call may run, before it runs (the permission policy, approvals).

    Returns None to let the call run, or the reason it may not, which the model is told.
    It may wait (for a person's answer); it must fail closed: an error in it refuses.
    """

    async def authorize(
        self, tool: Tool, call: ToolCall, context: ToolContext | None
    ) -> str | None: ...


class ToolManager:
    """The registry of tools a run may call, and their execution with timeouts.

    Args:
        tools: functions or :class:`Tool` objects to register.
        default_timeout: seconds a call may take when the tool sets none.
        authorizer: asked before every call (see :class:`Authorizer`); None lets all run.

    :meth:`subset` gives a view with fewer tools and the same authorizer (a subagent's).
    """

    def __init__(
        self,
        tools: Iterable[ToolLike] = (),
        *,
        default_timeout: float = 60.0,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.default_timeout = default_timeout
        self.authorizer = authorizer
        self._tools: dict[str, Tool] = {}
        self._definitions: list[ToolDefinition] | None = None
        self._disabled: frozenset[str] = frozenset()
        self.calls = 0
        self.errors = 0
        for t in tools:
            self.register(t)

    def subset(self, names: Iterable[str] | None = None) -> ToolManager:
        """A registry of some of these tools (all when ``names`` is None), with the same
        authorizer and timeout: it can never hold a tool this one does not.

        Raises:
            ToolNotFoundError: a name that is not a tool here.
        """
        chosen = list(self._tools) if names is None else list(names)
        view = ToolManager(default_timeout=self.default_timeout, authorizer=self.authorizer)
        for name in chosen:
            if name not in self._disabled:
                view._tools[name] = self.get(name)
        return view

    def disable(self, names: Iterable[str]) -> None:
        """Hide tools from the model and refuse their calls (``enable`` brings them back)."""
        self._disabled = self._disabled | frozenset(names)
        self._definitions = None

    def enable(self, names: Iterable[str]) -> None:
        self._disabled = self._disabled - frozenset(names)
        self._definitions = None

    def tools(self) -> list[Tool]:
        """The enabled tools, in registration order."""
        return [t for name, t in self._tools.items() if name not in self._disabled]

    def register(self, t: ToolLike, *, replace: bool = False) -> Tool:
        """Add a tool; registering the same tool twice is harmless.

        Raises:
            ConfigurationError: another tool has the same name (unless ``replace``): the model
                could not tell them apart, so one would silently shadow the other.
        """
        ft = t if isinstance(t, Tool) else FunctionTool(t)
        current = self._tools.get(ft.name)
        if current is not None and not _same(current, ft) and not replace:
            raise ConfigurationError(
                f"Two tools are named {ft.name!r}: {current.origin} and {ft.origin}. "
                "Rename one with @tool(name=...) or leave one out."
            )
        self._tools[ft.name] = ft
        self._definitions = None
        return ft

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)
        self._definitions = None

    def get(self, name: str) -> Tool:
        try:
            if name in self._disabled:
                raise KeyError(name)
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(set(self._tools) - self._disabled)) or "none"
            raise ToolNotFoundError(
                name, f"no such tool. Available tools: {known}. Call one of those."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools and name not in self._disabled

    def __len__(self) -> int:
        return len(self._tools) - len(self._disabled & self._tools.keys())

    def definitions(self) -> list[ToolDefinition]:
        if self._definitions is None:
            self._definitions = [t.definition for t in self.tools()]
        return self._definitions

    async def execute(
        self, call: ToolCall, context: ToolContext | None = None
    ) -> ToolResultMessage:
        """Run one call; every failure becomes an error result for the model.

        A tool that takes a :class:`ToolContext` gets its own copy carrying the call's id.
        """
        self.calls += 1
        ft: Tool | None = None
        try:
            ft = self.get(call.name)
            timeout = ft.timeout or self.default_timeout
            if context is not None and (ft.takes_context or self.authorizer is not None):
                context = replace(context, call_id=call.id)
            if self.authorizer is not None:
                refused = await self._authorize(ft, call, context)
                if refused is not None:
                    self.errors += 1
                    return ToolResultMessage(
                        tool_call_id=call.id,
                        name=call.name,
                        content=f"The call was refused: {refused}",
                        is_error=True,
                    )
            async with asyncio.timeout(timeout):
                value = await ft(call.arguments, context)
        except TimeoutError:
            self.errors += 1
            in_thread = ft is not None and ft.runs_in_thread
            error = ToolTimeoutError(call.name, timeout, thread_left_running=in_thread)
            return ToolResultMessage(
                tool_call_id=call.id, name=call.name, content=str(error), is_error=True
            )
        except (ToolNotFoundError, ToolArgumentsError) as exc:
            self.errors += 1
            return ToolResultMessage(
                tool_call_id=call.id, name=call.name, content=str(exc), is_error=True
            )
        except Exception as exc:  # a tool's own failure is reported to the model, not raised
            self.errors += 1
            return ToolResultMessage(
                tool_call_id=call.id,
                name=call.name,
                content=f"Tool '{call.name}' raised {type(exc).__name__}: {exc}",
                is_error=True,
            )
        return ToolResultMessage(tool_call_id=call.id, name=call.name, content=_render(value))

    async def _authorize(
        self, tool: Tool, call: ToolCall, context: ToolContext | None
    ) -> str | None:
        """The authorizer's answer; its own failure refuses the call (fail closed)."""
        assert self.authorizer is not None
        try:
            return await self.authorizer.authorize(tool, call, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.error(
                "the permission check of %s failed; the call is refused", call.name, exc_info=exc
            )
            return (
                f"its permission check failed ({type(exc).__name__}: {exc}), so it was not run. "
                "Tell the user; do not retry it."
            )
