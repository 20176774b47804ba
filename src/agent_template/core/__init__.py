"""The engine: run loop, scheduler, queues, streams, events, hooks, metrics. No SDKs here."""

from agent_template.core.async_queue import AsyncQueue, FlowStrategy
from agent_template.core.bus import EventBus, InProcessEventBus, Subscription, default_bus
from agent_template.core.hooks import HookContext, HookRegistry, Veto
from agent_template.core.metrics import Metrics, default_metrics
from agent_template.core.run_loop import ModelClient, RunConfig, RunState, ToolExecutor, run_events
from agent_template.core.scheduler import TaskHandler, TaskScheduler, TaskStore
from agent_template.core.stream_gen import (
    Chunk,
    ChunkStream,
    ConsumerPolicy,
    StreamConsumer,
    StreamGenerator,
)

__all__ = [
    "AsyncQueue",
    "Chunk",
    "ChunkStream",
    "ConsumerPolicy",
    "EventBus",
    "FlowStrategy",
    "HookContext",
    "HookRegistry",
    "InProcessEventBus",
    "Metrics",
    "ModelClient",
    "RunConfig",
    "RunState",
    "StreamConsumer",
    "StreamGenerator",
    "Subscription",
    "TaskHandler",
    "TaskScheduler",
    "TaskStore",
    "ToolExecutor",
    "Veto",
    "default_bus",
    "default_metrics",
    "run_events",
]
