"""The OpenAPI document: every endpoint of the specification, documented and valid, and a
bounded schemathesis run against the live server that finds no 5xx and no answer that
departs from the document."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import httpx

from agent_template import tool
from agent_template.api.app import create_app
from tests.server_helpers import serve, server_settings

# The specification's REST endpoints ("API Documentation"), and the ones added beside them.
SPEC_ENDPOINTS = {
    ("get", "/health"),
    ("get", "/api/v1/stats"),
    ("post", "/api/v1/sessions"),
    ("get", "/api/v1/sessions"),
    ("get", "/api/v1/sessions/{session_id}"),
    ("delete", "/api/v1/sessions/{session_id}"),
    ("post", "/api/v1/messages"),
    ("post", "/api/v1/messages/stream"),
    ("get", "/api/v1/sessions/{session_id}/messages"),
    ("post", "/api/v1/tasks"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{task_id}"),
    ("delete", "/api/v1/tasks/{task_id}"),
    ("get", "/api/v1/tools"),
    ("post", "/api/v1/tools/call"),
}
REST_ENDPOINTS = SPEC_ENDPOINTS | {
    ("patch", "/api/v1/sessions/{session_id}"),
    ("get", "/api/v1/sessions/{session_id}/todos"),
    ("get", "/api/v1/tasks/{task_id}/stream"),
    ("post", "/api/v1/sessions/{session_id}/compact"),
}
FUZZ_EXAMPLES = 12  # valid requests per operation: bounded, and still every operation
FUZZ_INVALID = 6  # and invalid ones, which must be refused with 4xx, never 5xx
FUZZ_SECONDS = 30  # the whole run's budget; operations left over are reported


@tool
def echo(text: str, times: int = 1) -> str:
    """Repeat a text.

    Args:
        text: what to repeat.
        times: how many times.
    """
    return text * max(0, min(times, 10))


async def openapi(tmp_path: Path) -> dict[str, Any]:
    async with (
        serve(create_app(server_settings(tmp_path))) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    return doc["components"]["schemas"][name]  # type: ignore[no-any-return]


async def test_the_document_lists_every_endpoint_of_the_specification(tmp_path: Path) -> None:
    doc = await openapi(tmp_path)
    listed = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    missing = sorted(REST_ENDPOINTS - listed)
    assert not missing, f"not in /openapi.json: {missing}"


async def test_every_rest_operation_is_documented_with_examples(tmp_path: Path) -> None:
    doc = await openapi(tmp_path)
    problems: list[str] = []
    for method, path in sorted(REST_ENDPOINTS):
        if not path.startswith("/api/v1/") or path == "/api/v1/stats":
            continue  # health and stats belong to their own routers and tests
        op = doc["paths"][path][method]
        where = f"{method.upper()} {path}"
        if not op.get("summary"):
            problems.append(f"{where}: no summary")
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and not resolve(doc, body["schema"]).get("examples"):
            problems.append(f"{where}: request body without an example")
        responses = op["responses"]
        expected = {"401", "422", "429", "503"} | ({"404"} if "{" in path else set())
        for status in sorted(expected):
            if status not in responses:
                problems.append(f"{where}: {status} not declared")
        for status, response in responses.items():
            content = response.get("content", {})
            if status.startswith("2"):
                if status == "204":
                    continue
                for media, entry in content.items():
                    schema = resolve(doc, entry.get("schema", {}))
                    if not (entry.get("example") or schema.get("examples")):
                        problems.append(f"{where}: {status} {media} without an example")
                if not content:
                    problems.append(f"{where}: {status} without content")
            else:
                json_error = content.get("application/json", {})
                if json_error.get("schema", {}).get("$ref") != "#/components/schemas/ErrorBody":
                    problems.append(f"{where}: {status} does not answer the error body")
                if "example" not in json_error:
                    problems.append(f"{where}: {status} without an example")
                if set(content) != {"application/json"}:
                    problems.append(f"{where}: {status} answers {sorted(content)}")
    assert not problems, "\n".join(problems)


async def test_the_document_is_valid_openapi(tmp_path: Path) -> None:
    import schemathesis

    doc = await openapi(tmp_path)
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # against the OpenAPI meta-schema
    broken = [str(result.err()) for result in schema.get_all_operations() if not _ok(result)]
    assert not broken, broken


def _ok(result: Any) -> bool:
    from schemathesis.core.result import Ok

    return isinstance(result, Ok)


def fuzz(base_url: str, doc: dict[str, Any], budget_s: float) -> tuple[list[str], list[str]]:
    """Run schemathesis on every operation, one after another, within ``budget_s``; returns
    the failures and the operations the budget left untested. (Blocking: run it in a thread
    while the server runs in the test's event loop.)"""
    import time

    import hypothesis
    import hypothesis.errors
    import schemathesis
    from hypothesis import HealthCheck, Phase
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_dict(doc)
    deadline = time.monotonic() + budget_s
    failures: list[str] = []
    untested: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in (
            (GenerationMode.POSITIVE, FUZZ_EXAMPLES),
            (GenerationMode.NEGATIVE, FUZZ_INVALID),
        ):
            if time.monotonic() > deadline:
                untested.append(f"{operation.label} ({mode.value})")
                continue

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters
            except Exception as exc:  # one operation's failure must not hide the others'
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, untested


async def test_schemathesis_finds_no_server_error(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, max_tasks_per_user=0)
    app = create_app(settings, tools=(echo,))
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        doc = (await client.get("/openapi.json")).json()
        failures, untested = await asyncio.to_thread(fuzz, base_url, doc, FUZZ_SECONDS)
    assert not failures, "\n\n".join(failures)
    if untested:  # a slow machine tests a subset, and says which part it left out
        warnings.warn(f"schemathesis ran out of time before: {untested}", stacklevel=1)
