"""Small pieces between the SDK and us: paged listings, capability names, elicitation, logs.

Imported only once a server is in use: it imports the SDK.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import mcp.types as mt

from agent_template.models import ToolContext
from agent_template.services.mcp.models import ElicitationHandler, ElicitationRequest

if TYPE_CHECKING:
    from mcp import Client

__all__ = [
    "answer_elicitation",
    "capability_names",
    "list_prompts",
    "list_resources",
    "list_tools",
    "route_sdk_logs",
]

_log = logging.getLogger("agent_template.mcp")
_SDK_LOGGERS = ("mcp", "client", "httpx2")  # the SDK's session logs as "client"
_LIST_PAGES_MAX = 100  # a server whose listing never ends cannot hang us


class _ToOurLog(logging.Handler):
    """The SDK's warnings and errors, into ``agent_template.mcp.sdk``.

    The SDK adds no handler of its own, so without one Python prints its tracebacks on the
    terminal; through ours they reach the log file, and the terminal gets one line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("agent_template.mcp.sdk").handle(record)


def route_sdk_logs() -> None:
    """Send the SDK's warnings and errors to our log (once per process)."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToOurLog) for h in logger.handlers):
            logger.addHandler(_ToOurLog(logging.WARNING))


def capability_names(capabilities: mt.ServerCapabilities | None) -> tuple[str, ...]:
    """What a server offers: ``tools``, ``resources``, ``prompts``, ``logging``..."""
    if capabilities is None:
        return ()
    offered = capabilities.model_dump(exclude_none=True)
    return tuple(name for name in offered if name not in ("experimental", "extensions"))


async def list_tools(client: Client) -> list[mt.Tool]:
    items: list[mt.Tool] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGES_MAX):
        page = await client.list_tools(cursor=cursor)
        items.extend(page.tools)
        if (cursor := page.next_cursor) is None:
            break
    return items


async def list_resources(client: Client) -> list[mt.Resource]:
    items: list[mt.Resource] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGES_MAX):
        page = await client.list_resources(cursor=cursor)
        items.extend(page.resources)
        if (cursor := page.next_cursor) is None:
            break
    return items


async def list_prompts(client: Client) -> list[mt.Prompt]:
    items: list[mt.Prompt] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGES_MAX):
        page = await client.list_prompts(cursor=cursor)
        items.extend(page.prompts)
        if (cursor := page.next_cursor) is None:
            break
    return items


async def answer_elicitation(
    server: str,
    handler: ElicitationHandler | None,
    params: mt.ElicitRequestParams,
    context: ToolContext | None = None,
) -> mt.ElicitResult:
    """The answer to a server's question for the user; declined when nobody can answer.

    A failing handler cancels the question rather than failing the server's call.
    """
    if isinstance(params, mt.ElicitRequestURLParams):
        request = ElicitationRequest(
            server, params.message, mode="url", url=params.url, context=context
        )
    else:
        request = ElicitationRequest(
            server, params.message, dict(params.requested_schema), context=context
        )
    if handler is None:
        _log.info(
            "MCP server %r asked the user %r; declined, as nobody is there to answer",
            server,
            params.message,
            extra={"mcp_server": server},
        )
        return mt.ElicitResult(action="decline")
    try:
        answer = await handler(request)
    except Exception:  # the question is cancelled; the server's call goes on
        _log.exception("Answering the question of MCP server %r failed; cancelled it", server)
        return mt.ElicitResult(action="cancel")
    accepted = answer.action == "accept" and request.mode == "form"
    return mt.ElicitResult(action=answer.action, content=answer.content if accepted else None)
