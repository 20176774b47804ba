"""Command-line interface: ``agent-template``, ``agent-server`` and ``agent-client``.

Only Typer is imported at start-up; everything else is imported by the command that needs it,
so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent_template.cli_output import Printer as _Printer
from agent_template.cli_output import clip as _clip
from agent_template.cli_output import err as _err
from agent_template.cli_output import style as _style
from agent_template.cli_output import with_cli_hint as _with_hint

if TYPE_CHECKING:
    from agent_template.config import Settings
    from agent_template.services.model_provider import ModelManager
    from agent_template.services.tool_manager import FunctionTool


def _plain_help() -> None:
    """Help in the classic style: ``PROMPT``, ``--session ID``, plain flags.

    Typer 0.29 writes the Python type next to each parameter (``<str>``, ``<bool>``) and
    braces around required arguments (``{prompt}``), which reads as markup to a person.
    """
    core = typer.core
    argument, option = getattr(core, "TyperArgument", None), getattr(core, "TyperOption", None)
    if argument is None or option is None:
        return  # another Typer: keep its own style

    def no_type(self: Any, ctx: Any) -> None:
        return None

    def usage_name(self: Any) -> str:
        name = str(self.metavar or self.name).upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def option_type(self: Any, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return str(self.metavar or self.name).upper()

    for name, value in (
        ("display_type_rich", no_type),
        ("_usage_display_name", usage_name),
    ):
        if hasattr(argument, name):
            setattr(argument, name, value)
    if hasattr(option, "display_type_rich"):
        option.display_type_rich = option_type


_plain_help()

app = typer.Typer(
    name="agent-template",
    help="Run AI agents that stream answers and call tools, from the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs are reflowed, not broken mid-sentence
)

_EXIT_CONFIG = 2
_EXIT_FAILED = 1
_EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_EXIT_TERMINATED = 143  # 128 + SIGTERM


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
        _err(_with_cli_hint(exc))
        raise typer.Exit(_EXIT_CONFIG) from None


LOCAL_USER = "default"  # the one user of the command line: every CLI session is theirs


def _read_prompt(prompt: str | None, file: Path | None) -> str:
    """The prompt from the argument, standard input (``-``) or ``--file``."""
    if file is not None and prompt is not None:
        _err("Give the prompt as an argument or with --file, not both.")
        raise typer.Exit(_EXIT_CONFIG)
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _err(f"Cannot read the prompt from {file}: {exc}")
            raise typer.Exit(_EXIT_CONFIG) from None
    if prompt == "-":
        return sys.stdin.read()
    return prompt or ""


@app.command()
def run(
    prompt: Annotated[
        str | None,
        typer.Argument(
            metavar="PROMPT",
            help="What to ask the agent; '-' reads it from standard input.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", metavar="PATH", help="Read the prompt from this file."),
    ] = None,
    tools: Annotated[
        list[str] | None,
        typer.Option(
            "--tools",
            "-t",
            metavar="MODULE",
            help="Module or .py file whose @tool functions to offer (repeatable).",
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            "--session", "-s", metavar="ID", help="Continue (or create) this persisted session."
        ),
    ] = None,
    provider: Annotated[
        str | None, typer.Option(metavar="NAME", help="Provider, overriding settings.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(metavar="NAME", help="Model, overriding settings.")
    ] = None,
    instructions: Annotated[
        str, typer.Option("--instructions", "-i", metavar="TEXT", help="System prompt.")
    ] = "You are a helpful assistant.",
    max_turns: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="Model turns before giving up (at least 1)."),
    ] = None,
    json_events: Annotated[
        bool, typer.Option("--json", help="Print every event as a JSON line.")
    ] = False,
) -> None:
    """Stream an answer from an agent in this process, showing its tool calls.

    With --session, the conversation is stored in DATABASE_URL and the next run with the
    same session continues it; runs on one session take turns, also across processes.
    """
    text = _read_prompt(prompt, file)
    if not text.strip():
        _err(
            'The prompt is empty. Ask something: agent-template run "What is 2 + 3?" '
            "(or pipe it in with 'run -', or use --file PATH)."
        )
        raise typer.Exit(_EXIT_CONFIG)
    settings = _settings()
    manager = _manager(settings, provider, model)
    tool_list = _load_tools(tools or [])
    if manager.is_offline:
        from agent_template.services.providers.offline import OFFLINE_NOTICE

        _err(_style(OFFLINE_NOTICE, fg="yellow"))
    job = _stream_run(
        settings, manager, tool_list, text, instructions, max_turns, json_events, session
    )
    try:
        code = _run_interruptible(job)
    except KeyboardInterrupt:
        _err("[cancelled]")
        code = _EXIT_INTERRUPTED
    raise typer.Exit(code)


def _run_interruptible(job: Any) -> int:
    """Run ``job``; SIGTERM cancels it like Ctrl-C does, so the partial answer is stored."""
    import signal

    async def main() -> int:
        task = asyncio.current_task()
        terminated = False

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        loop = asyncio.get_running_loop()
        # Where signal handlers are not supported, SIGTERM keeps its default effect.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            return int(await job)
        except asyncio.CancelledError:
            if terminated:
                _err("[terminated]")
                return _EXIT_TERMINATED
            raise

    return asyncio.run(main())


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
    from agent_template.runtime import AgentLoop, stream_store

    sessions = None
    if session_id is None:  # nothing to keep: no database needed
        from agent_template.services.session_manager import MemorySessionStore, SessionManager

        sessions = SessionManager(store=MemorySessionStore())
    try:
        loop = AgentLoop(
            settings,
            model=manager,
            tools=tools,
            instructions=instructions,
            session_manager=sessions,
            todo_tools=session_id is not None,  # a plan needs a session to live in
            streams=stream_store(settings),
        )
    except AgentTemplateError as exc:  # tools named alike, for one
        _err(_style(f"Error: {exc}", fg="red"))
        return _EXIT_CONFIG
    if max_turns:
        loop.agent.max_turns = max_turns
    printer = _Printer(json_events)
    loop.bus.add_listener(printer.compacted, types=["context_compacted"])
    task = None
    try:
        task = await loop.create_task(
            {"type": "chat", "message": prompt, "session_id": session_id, "user_id": LOCAL_USER}
        )
        async for chunk in loop.subscribe(task.task_id):
            printer.show(chunk.event)
            request = _approval_request(chunk.event)
            if request is not None:
                await _answer_at_terminal(loop, request)
        await loop.run()
        if task.state.value == "failed" and not printer.error_shown:
            _err(_style(f"Error: {task.error}", fg="red"))
    except AgentTemplateError as exc:  # storage or configuration trouble, said plainly
        _err(_style(f"Error: {_with_cli_hint(exc)}", fg="red"))
        return _EXIT_FAILED
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: stop the run now, keeping its output
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


def _approval_request(event: Any) -> Any:
    """The approval request an event carries (also one nested in a subagent's event)."""
    from agent_template.models import ApprovalRequested

    if isinstance(event, ApprovalRequested):
        return event
    if getattr(event, "type", None) == "subagent" and event.event.get("type") == "approval_request":
        return ApprovalRequested.model_validate(event.event)
    return None


async def _answer_at_terminal(loop: Any, request: Any) -> None:
    from agent_template.cli_output import ask_approval
    from agent_template.errors import AgentTemplateError

    decision, note = await asyncio.to_thread(ask_approval, request)
    try:
        await loop.approvals.answer(request.approval_id, decision, message=note)
    except AgentTemplateError as exc:  # it timed out meanwhile: the run was told
        _err(_style(str(exc), dim=True))


def _with_cli_hint(exc: BaseException) -> str:
    """The error's message, plus what to do about it with this command line's options."""
    return _with_hint(str(exc), getattr(exc, "code", ""))


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
        _err(_with_cli_hint(exc))
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
        typer.echo(f"answer:   {_clip(response.message.text, 120)}")

    try:
        asyncio.run(once())
    except AgentTemplateError as exc:
        _err(f"Provider {name!r} failed: {_with_cli_hint(exc)}")
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
    if settings.builtin_tools:
        from agent_template.services.sandbox import sandbox_report

        typer.echo(f"Sandbox (workspace {settings.workspace_dir.resolve()})")
        for line in sandbox_report().lines():
            typer.echo(f"  {line}")
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
        primary_up = True
        for name in ready or [primary]:
            up, line = asyncio.run(_ping(settings, name))
            typer.echo(f"  {name:<10}{line}")
            if name == primary:
                primary_up = up
        if not primary_up:
            _err(f"The primary provider {primary!r} is not answering.")
            raise typer.Exit(_EXIT_FAILED)


async def _ping(settings: Settings, name: str) -> tuple[bool, str]:
    import time

    from agent_template.errors import AgentTemplateError
    from agent_template.models import ModelRequest, UserMessage
    from agent_template.services.providers import build_provider

    try:
        provider = build_provider(name, settings)
    except AgentTemplateError as exc:
        return False, f"error: {exc}"
    t0 = time.perf_counter()
    try:
        await provider.complete(ModelRequest(messages=[UserMessage(content="ping")]))
    except AgentTemplateError as exc:
        return False, f"down: {exc}"
    finally:
        await provider.aclose()
    return True, f"up, {(time.perf_counter() - t0) * 1000:.0f} ms"


@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing .env.")] = False,
) -> None:
    """Write .env from the template and create the data folders."""
    target = Path(".env")
    from importlib import resources

    template = resources.files("agent_template").joinpath("env.example").read_text("utf-8")
    try:
        if target.exists() and not force:
            _err(".env already exists; keeping it. Use --force to overwrite it.")
        else:
            target.write_text(template, encoding="utf-8")
            typer.echo(f"Wrote {target.resolve()}")
        for folder in ("data/logs", "data/cache", "data/sessions"):
            Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = Path(exc.filename or ".").resolve()
        _err(
            f"Cannot write {where}: {exc.strerror or exc}. Check that this folder is yours to "
            "write in (its permissions), or run init somewhere else."
        )
        raise typer.Exit(_EXIT_FAILED) from None
    typer.echo("Data folders ready under ./data")


def main() -> None:
    """Entry point of ``agent-template``."""
    from agent_template.cli_mcp import mcp_app
    from agent_template.cli_sandbox import sandbox_app
    from agent_template.cli_sessions import db_app, sessions_app
    from agent_template.cli_tokens import token_app

    app.add_typer(sessions_app, name="sessions")
    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.add_typer(sandbox_app, name="sandbox")
    app.add_typer(mcp_app, name="mcp")
    app()


def server_main() -> None:
    """Entry point of ``agent-server`` (the FastAPI server)."""
    from agent_template.api.server import main as serve

    serve()


def client_main() -> None:
    """Entry point of ``agent-client`` (the terminal client)."""
    from agent_template.cli_client import main as client

    raise SystemExit(client())


if __name__ == "__main__":
    main()
