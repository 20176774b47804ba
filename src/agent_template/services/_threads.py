"""Worker threads for sync tools that cannot hold up the process when a call is abandoned.

Python cannot stop a thread. When a sync tool times out or its run is cancelled, its thread
runs on until the function returns, which for a hung tool is never. ``asyncio.to_thread`` uses
the loop's default executor, whose non-daemon threads ``asyncio.run`` and the interpreter wait
for at exit: a Ctrl-C then leaves the process hanging. These threads are daemons, so the process
exits at once; an abandoned call's result is dropped, and its thread no longer counts against
the pool, so a hung tool cannot take the pool's capacity with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_THREADS", "run_in_thread", "thread_stats"]

MAX_THREADS = 32  # threads busy at once; more calls wait for one (like to_thread's default)
_IDLE_EXIT_S = 60.0  # an idle thread exits after this long, so bursts do not leave threads


class _Call:
    __slots__ = ("abandoned", "context", "fn", "future", "kwargs", "loop", "running")

    def __init__(
        self,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        # The caller's context variables, as asyncio.to_thread hands them on (logging and
        # tracing context, for one).
        self.context = contextvars.copy_context()
        self.fn = fn
        self.kwargs = kwargs
        self.loop = loop
        self.future = future
        self.abandoned = False
        self.running = False


class _Pool:
    def __init__(self) -> None:
        self._work: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.threads = 0  # alive, not counting those stuck in an abandoned call
        self.idle = 0
        self.queued = 0
        self.abandoned = 0  # threads still inside a call nobody waits for

    def submit(self, call: _Call) -> None:
        with self._lock:
            self.queued += 1
            spawn = self.queued > self.idle and self.threads < MAX_THREADS
            if spawn:
                self.threads += 1
        self._work.put(call)
        if spawn:
            threading.Thread(target=self._worker, name="agent-template-tool", daemon=True).start()

    def abandon(self, call: _Call) -> None:
        """Nobody waits for ``call`` any more: a queued one never runs; a running one's
        thread stops counting against the pool until the function returns."""
        with self._lock:
            if call.abandoned:
                return
            call.abandoned = True
            if call.running:
                self.threads -= 1
                self.abandoned += 1

    def _worker(self) -> None:
        while True:
            with self._lock:
                self.idle += 1
            try:
                call = self._work.get(timeout=_IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    self.idle -= 1
                    self.threads -= 1
                return
            with self._lock:
                self.idle -= 1
                self.queued -= 1
                if call.abandoned:  # cancelled before it started: do not run it at all
                    continue
                call.running = True
            if not self._run(call):
                return

    def _run(self, call: _Call) -> bool:
        """Run one call; False when this thread should end (it came back from an abandoned
        call and the pool is full meanwhile)."""
        try:
            outcome: tuple[bool, Any] = (True, call.context.run(call.fn, **call.kwargs))
        except BaseException as exc:
            outcome = (False, exc)
        with self._lock:
            call.running = False
            abandoned = call.abandoned
            if abandoned:
                self.abandoned -= 1
                if self.threads >= MAX_THREADS:
                    return False
                self.threads += 1
        if not abandoned:
            _deliver(call, outcome)
        return True


def _deliver(call: _Call, outcome: tuple[bool, Any]) -> None:
    def settle() -> None:
        future = call.future
        if future.done():
            return
        ok, value = outcome
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is left to tell
        call.loop.call_soon_threadsafe(settle)


_pool = _Pool()


async def run_in_thread(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``fn(**kwargs)`` in a daemon worker thread; cancelling abandons (not stops) the call."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    call = _Call(fn, kwargs, loop, future)
    _pool.submit(call)
    try:
        return await future
    except asyncio.CancelledError:
        _pool.abandon(call)
        raise


def thread_stats() -> dict[str, int]:
    """Threads of the pool: alive and counted, idle, and stuck in abandoned calls."""
    return {"threads": _pool.threads, "idle": _pool.idle, "abandoned": _pool.abandoned}
