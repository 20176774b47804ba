"""One transport per server config: stdio, streamable HTTP, or SSE, each watched.

Every transport reports to a :class:`TransportWatch`: when the server goes away (so the
connection restarts it) and what it said on the way (exit code, stderr, HTTP status).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from agent_template.services.mcp._watch import TransportWatch
from agent_template.services.mcp.config import HttpServerConfig, McpServerConfig

if TYPE_CHECKING:
    import httpx2
    from mcp.client._transport import ReadStream, TransportStreams

__all__ = ["open_transport"]

HTTP_TIMEOUT_S = 30.0  # connect, write and pool timeouts of HTTP requests
HTTP_READ_MARGIN_S = 60.0  # a response may stay silent this much longer than a call may take
HTTP_READ_MIN_S = 300.0  # an event stream may stay silent this long (the SDK's default)

_T = TypeVar("_T")


def open_transport(
    config: McpServerConfig, watch: TransportWatch
) -> AbstractAsyncContextManager[TransportStreams]:
    """The transport for ``config``, entered by the SDK's ``Client``."""
    if isinstance(config, HttpServerConfig):
        return _sse(config, watch) if config.transport == "sse" else _http(config, watch)
    from agent_template.services.mcp._stdio import stdio_transport

    return stdio_transport(config, watch)


def _http_client(
    config: HttpServerConfig,
    watch: TransportWatch,
    *,
    headers: dict[str, Any] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An HTTP client that tells ``watch`` each error status (the SDK keeps only its class)."""
    import httpx2

    async def on_response(response: httpx2.Response) -> None:
        watch.saw_status(response.status_code)

    read = max(HTTP_READ_MIN_S, config.call_timeout + HTTP_READ_MARGIN_S)
    return httpx2.AsyncClient(
        headers=headers if headers is not None else dict(config.headers),
        timeout=timeout or httpx2.Timeout(HTTP_TIMEOUT_S, read=read),
        auth=auth,
        event_hooks={"response": [on_response]},
    )


@asynccontextmanager
async def _http(config: HttpServerConfig, watch: TransportWatch) -> AsyncIterator[TransportStreams]:
    from mcp.client.streamable_http import streamable_http_client

    async with (
        _http_client(config, watch) as client,
        streamable_http_client(config.url, http_client=client) as (read, write),
    ):
        yield _WatchedReadStream(read, watch), write


@asynccontextmanager
async def _sse(config: HttpServerConfig, watch: TransportWatch) -> AsyncIterator[TransportStreams]:
    from mcp.client.sse import sse_client

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        return _http_client(config, watch, headers=headers, timeout=timeout, auth=auth)

    read = max(HTTP_READ_MIN_S, config.call_timeout + HTTP_READ_MARGIN_S)
    async with sse_client(
        config.url,
        headers=dict(config.headers),
        timeout=HTTP_TIMEOUT_S,
        sse_read_timeout=read,
        httpx_client_factory=factory,
    ) as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, watch), write_stream


class _WatchedReadStream(Generic[_T]):
    """A transport's read stream that tells ``watch`` when the server ends it.

    The end of the stream is how an event-stream server going away shows; the SDK's session
    only fails the requests in flight, so without this nobody would restart it.
    """

    __slots__ = ("_inner", "_watch")

    def __init__(self, inner: ReadStream[_T], watch: TransportWatch) -> None:
        self._inner = inner
        self._watch = watch

    @property
    def last_context(self) -> Any:
        # The dispatcher reads the sender's context from here on streams that carry one.
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> _T:
        try:
            return await self._inner.receive()
        except anyio.EndOfStream:
            self._watch.mark_lost()
            raise

    def __aiter__(self) -> _WatchedReadStream[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream[_T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()
