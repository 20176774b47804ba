"""Command-line interface: ``agent-template``, ``agent-server`` and ``agent-client``.

Only Typer is imported at start-up; everything else is imported by the command that needs it,
so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent_template.cli_output import Printer as _Printer
from agent_template.cli_output import clip as _clip
from agent_template.cli_output import err as _err
from agent_template.cli_output import style as _style

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.services.model_provider import ModelManager
    from agent_template.services.tool_manager import FunctionTool

app = typer.Typer(
    name="agent-template",
    help="Run AI agents that stream answers and call tools, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_EXIT_CONFIG = 2
_EXIT_FAILED = 1
_EXIT_INTERRUPTED = 130


def _settings() -> Settings:
    from agent_template.config import load_settings
    from agent_template.errors import ConfigurationError

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        _err(str(exc))
        raise typer.Exit(_EXIT_CONFIG) from None
    from agent_template.utils.gc_tuning import tune_gc
    from agent_template.utils.logging_setup import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.log_file)
    tune_gc()
    return settings


def _load_tools(specs: list[str]) -> list[FunctionTool]:
    """Every :class:`FunctionTool` that the given modules (names or ``.py`` paths) define."""
    import importlib
    import importlib.util

    from agent_template.services.tool_manager import FunctionTool

    found: list[FunctionTool] = []
    for spec in specs:
        try:
            if spec.endswith(".py") or os.sep in spec:
                path = Path(spec).resolve()
                module_spec = importlib.util.spec_from_file_location(path.stem, path)
                if module_spec is None or module_spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[path.stem] = module
                module_spec.loader.exec_module(module)
            else:
                sys.path.insert(0, os.getcwd())
                module = importlib.import_module(spec)
        except Exception as exc:
            _err(f"Cannot load tools from {spec!r}: {type(exc).__name__}: {exc}")
            raise typer.Exit(_EXIT_CONFIG) from None
        tools = [v for v in vars(module).values() if isinstance(v, FunctionTool)]
        if not tools:
            _err(
                f"Module {spec!r} defines no tools. Decorate functions with "
                "'from agent_template import tool' and '@tool'."
            )
            raise typer.Exit(_EXIT_CONFIG)
        found.extend(tools)
    return found


def _manager(settings: Settings, provider: str | None, model: str | None) -> ModelManager:
    from agent_template.errors import ConfigurationError
    from agent_template.services.model_provider import ModelManager

    try:
        return ModelManager(settings, provider=provider, model=model)
    except ConfigurationError as exc:
        _err(str(exc))
        raise typer.Exit(_EXIT_CONFIG) from None


@app.command()
def run(
    prompt: Annotated[str, typer.Argument(help="What to ask the agent.")],
    tools: Annotated[
        list[str] | None,
        typer.Option("--tools", "-t", help="Module or .py file whose @tool functions to offer."),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option("--session", "-s", help="Continue (or create) this persisted session."),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider, overriding settings.")] = None,
    model: Annotated[str | None, typer.Option(help="Model, overriding settings.")] = None,
    instructions: Annotated[
        str, typer.Option("--instructions", "-i", help="System prompt.")
    ] = "You are a helpful assistant.",
    max_turns: Annotated[int | None, typer.Option(help="Model turns before giving up.")] = None,
    json_events: Annotated[
        bool, typer.Option("--json", help="Print every event as a JSON line.")
    ] = False,
) -> None:
    """Stream an answer from an agent in this process, showing its tool calls.

    With --session, the conversation is stored in DATABASE_URL and the next run with the
    same session continues it.
    """
    if not prompt.strip():
        _err('The prompt is empty. Ask something: agent-template run "What is 2 + 3?"')
        raise typer.Exit(_EXIT_CONFIG)
    settings = _settings()
    manager = _manager(settings, provider, model)
    tool_list = _load_tools(tools or [])
    if manager.is_offline:
        from agent_template.services.providers.offline import OFFLINE_NOTICE

        _err(_style(OFFLINE_NOTICE, fg="yellow"))
    job = _stream_run(
        settings, manager, tool_list, prompt, instructions, max_turns, json_events, session
    )
    try:
        code = asyncio.run(job)
    except KeyboardInterrupt:
        _err("[cancelled]")
        code = _EXIT_INTERRUPTED
    raise typer.Exit(code)


async def _stream_run(
    settings: Settings,
    manager: ModelManager,
    tools: list[FunctionTool],
    prompt: str,
    instructions: str,
    max_turns: int | None,
    json_events: bool,
    session_id: str | None,
) -> int:
    from agent_template.errors import AgentTemplateError
    from agent_template.runtime import AgentLoop

    sessions = None
    if session_id is None:  # nothing to keep: no database needed
        from agent_template.services.session_manager import MemorySessionStore, SessionManager

        sessions = SessionManager(store=MemorySessionStore())
    loop = AgentLoop(
        settings,
        model=manager,
        tools=tools,
        instructions=instructions,
        session_manager=sessions,
        todo_tools=session_id is not None,  # a plan needs a session to live in
    )
    if max_turns:
        loop.agent.max_turns = max_turns
    printer = _Printer(json_events)
    loop.bus.add_listener(printer.compacted, types=["context_compacted"])
    task = None
    try:
        task = await loop.create_task({"type": "chat", "message": prompt, "session_id": session_id})
        async for chunk in task.stream.subscribe():
            printer.show(chunk.event)
        await loop.run()
        if task.state.value == "failed" and not printer.error_shown:
            _err(_style(f"Error: {task.error}", fg="red"))
    except AgentTemplateError as exc:  # storage or configuration trouble, said plainly
        _err(_style(f"Error: {exc}", fg="red"))
        return _EXIT_FAILED
    except asyncio.CancelledError:  # Ctrl-C: stop the run now, keeping what it produced
        if task is not None:
            await asyncio.shield(loop.cancel_task(task.task_id))
        raise
    finally:
        await asyncio.shield(_shutdown(loop, manager))
    printer.finish()
    if session_id is not None:
        _err(_style(f"[session {session_id}]", dim=True))
    status = task.state.value
    if status == "cancelled":
        _err("[cancelled]")
        return _EXIT_INTERRUPTED
    return 0 if status == "completed" else _EXIT_FAILED


async def _shutdown(loop: Any, manager: ModelManager) -> None:
    await loop.stop(deadline=5)
    await loop.sessions.close()
    await manager.aclose()


@app.command("test-model")
def test_model(
    provider: Annotated[str | None, typer.Option(help="Provider to test.")] = None,
    model: Annotated[str | None, typer.Option(help="Model to test.")] = None,
) -> None:
    """Make one real round trip to a provider and report model, latency and usage."""
    settings = _settings()
    from agent_template.errors import AgentTemplateError, ConfigurationError
    from agent_template.models import ModelRequest, UserMessage
    from agent_template.services.providers import build_provider, resolve_primary

    name = provider or resolve_primary(settings)
    try:
        instance = build_provider(name, settings, model=model or settings.default_model)
    except ConfigurationError as exc:
        _err(str(exc))
        raise typer.Exit(_EXIT_CONFIG) from None

    async def once() -> None:
        import time

        request = ModelRequest(messages=[UserMessage(content="Reply with one word: pong")])
        t0 = time.perf_counter()
        try:
            response = await instance.complete(request)
        finally:
            await instance.aclose()
        ms = (time.perf_counter() - t0) * 1000
        u = response.usage
        typer.echo(f"provider: {name}")
        typer.echo(f"model:    {response.message.model or instance.model}")
        typer.echo(f"latency:  {ms:.0f} ms")
        typer.echo(f"usage:    {u.input_tokens} input + {u.output_tokens} output tokens")
        typer.echo(f"answer:   {_clip(response.message.content, 120)}")

    try:
        asyncio.run(once())
    except AgentTemplateError as exc:
        _err(f"Provider {name!r} failed: {exc}")
        raise typer.Exit(_EXIT_FAILED) from None


@app.command()
def status(
    check: Annotated[
        bool, typer.Option("--check", help="Also make a round trip to each ready provider.")
    ] = False,
) -> None:
    """Show the configuration and the health of each configured provider."""
    settings = _settings()
    from agent_template.services.providers import PROVIDERS, resolve_primary

    primary = resolve_primary(settings)
    offline = " (offline: no provider configured)" if primary == "test" else ""
    rows = [
        ("provider", primary + offline),
        ("model", settings.default_model or PROVIDERS[primary].default_model),
        ("fallbacks", ", ".join(settings.fallback_providers) or "none"),
        ("load balancing", settings.load_balancing),
        ("database", settings.database_url),
        ("redis", settings.redis_url or "not configured (in-memory cache)"),
        ("max concurrent tasks", str(settings.max_concurrent_tasks)),
        (
            "context",
            f"{settings.max_context_length} tokens, compressed at "
            f"{settings.context_compression_threshold:.0%}",
        ),
    ]
    typer.echo("Configuration")
    for key, value in rows:
        typer.echo(f"  {key:<22}{value}")
    fallbacks = {f.partition(":")[0] for f in settings.fallback_providers}
    ready: list[str] = []
    typer.echo("Providers")
    for name, spec in PROVIDERS.items():
        if name == "test":
            continue
        if name == "ollama":
            state = f"local server at {settings.ollama_host}"
        elif name == "local":
            state = settings.local_base_url or "not configured (set LOCAL_BASE_URL)"
        elif settings.api_key(name):
            state = "key set"
        elif name in ("openai", "anthropic") and getattr(settings, f"{name}_base_url"):
            state = "no key, custom base URL"
        else:
            state = f"not configured (set {spec.key_var})"
        if not state.startswith("not configured") and (name == primary or name in fallbacks):
            ready.append(name)
        role = "primary" if name == primary else "fallback" if name in fallbacks else ""
        typer.echo(f"  {name:<10}{state:<44}{role}")
    if check:
        typer.echo("Health")
        for name in ready or [primary]:
            typer.echo(f"  {name:<10}{asyncio.run(_ping(settings, name))}")


async def _ping(settings: Settings, name: str) -> str:
    import time

    from agent_template.errors import AgentTemplateError
    from agent_template.models import ModelRequest, UserMessage
    from agent_template.services.providers import build_provider

    try:
        provider = build_provider(name, settings)
    except AgentTemplateError as exc:
        return f"error: {exc}"
    t0 = time.perf_counter()
    try:
        await provider.complete(ModelRequest(messages=[UserMessage(content="ping")]))
    except AgentTemplateError as exc:
        return f"down: {exc}"
    finally:
        await provider.aclose()
    return f"up, {(time.perf_counter() - t0) * 1000:.0f} ms"


@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing .env.")] = False,
) -> None:
    """Write .env from the template and create the data folders."""
    target = Path(".env")
    from importlib import resources

    template = resources.files("agent_template").joinpath("env.example").read_text("utf-8")
    if target.exists() and not force:
        _err(".env already exists; keeping it. Use --force to overwrite it.")
    else:
        target.write_text(template, encoding="utf-8")
        typer.echo(f"Wrote {target.resolve()}")
    for folder in ("data/logs", "data/cache", "data/sessions"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    typer.echo("Data folders ready under ./data")


def main() -> None:
    """Entry point of ``agent-template``."""
    from agent_template.cli_sessions import db_app, sessions_app

    app.add_typer(sessions_app, name="sessions")
    app.add_typer(db_app, name="db")
    app()


def server_main() -> None:
    """Entry point of ``agent-server`` (the FastAPI server)."""
    _err("agent-server is not built yet; use 'agent-template run' for now.")
    raise SystemExit(_EXIT_FAILED)


def client_main() -> None:
    """Entry point of ``agent-client`` (the terminal client)."""
    _err("agent-client is not built yet; use 'agent-template run' for now.")
    raise SystemExit(_EXIT_FAILED)


if __name__ == "__main__":
    main()
