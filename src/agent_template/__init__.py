"""agent-template: typed, fast AI agents with streaming, tools and provider failover.

Names are imported on first use, so ``import agent_template`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AgentLoop": "agent_template.runtime",
    "StreamGenerator": "agent_template.core.stream_gen",
    "SessionManager": "agent_template.services.session_manager",
    "HookRegistry": "agent_template.core.hooks",
    "Veto": "agent_template.core.hooks",
    "Agent": "agent_template.agent",
    "AgentRun": "agent_template.agent",
    "RunResult": "agent_template.agent",
    "tool": "agent_template.services.tool_manager",
    "FunctionTool": "agent_template.services.tool_manager",
    "ToolContext": "agent_template.services.tool_manager",
    "ToolManager": "agent_template.services.tool_manager",
    "ModelManager": "agent_template.services.model_provider",
    "ModelProvider": "agent_template.services.model_provider",
    "Settings": "agent_template.config",
    "load_settings": "agent_template.config",
}

__all__ = [
    "Agent",
    "AgentLoop",
    "AgentRun",
    "FunctionTool",
    "HookRegistry",
    "ModelManager",
    "ModelProvider",
    "RunResult",
    "SessionManager",
    "Settings",
    "StreamGenerator",
    "ToolContext",
    "ToolManager",
    "Veto",
    "__version__",
    "load_settings",
    "tool",
]

if TYPE_CHECKING:
    from agent_template.agent import Agent, AgentRun, RunResult
    from agent_template.config import Settings, load_settings
    from agent_template.core.hooks import HookRegistry, Veto
    from agent_template.core.stream_gen import StreamGenerator
    from agent_template.runtime import AgentLoop
    from agent_template.services.model_provider import ModelManager, ModelProvider
    from agent_template.services.session_manager import SessionManager
    from agent_template.services.tool_manager import FunctionTool, ToolContext, ToolManager, tool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agent_template' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
