"""Settings: defaults, parsing and start-up errors that name the variable."""

from __future__ import annotations

import pytest

from agent_template.config import Settings, load_settings
from agent_template.errors import ConfigurationError, MissingAPIKeyError
from agent_template.services.providers import build_chain, resolve_primary


def test_defaults_need_no_configuration() -> None:
    s = load_settings()
    assert s.database_url.startswith("sqlite")
    assert s.redis_url is None or s.redis_url.startswith("redis")
    assert resolve_primary(s) == "test"


def test_fallbacks_parse_as_an_ordered_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALLBACK_PROVIDERS", "anthropic, deepseek:deepseek-reasoner,test")
    assert load_settings().fallback_providers == [
        "anthropic",
        "deepseek:deepseek-reasoner",
        "test",
    ]


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("FALLBACK_PROVIDERS", "openai,nope", "provider or provider:model"),
        ("SERVER_PORT", "eighty", "an integer from 1 to 65535"),
        ("CONTEXT_COMPRESSION_THRESHOLD", "1.5", "greater than 0 and at most 1"),
        ("DEFAULT_MODEL_PROVIDER", "gpt", "one of openai, anthropic"),
        ("LOG_FORMAT", "xml", "json or text"),
        ("MODEL_ATTEMPT_TIMEOUT", "0", "a positive number of seconds"),
        ("MODEL_CALL_TIMEOUT", "-5", "a positive number of seconds"),
    ],
)
def test_invalid_values_name_the_variable_and_the_form(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert var in str(info.value)
    assert expected in str(info.value)
    assert repr(value) in str(info.value)


def test_env_file_is_read(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=sk-ant\nMAX_CONCURRENT_TASKS=3\n")  # type: ignore[operator]
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    s = load_settings()
    assert s.max_concurrent_tasks == 3
    assert resolve_primary(s) == "anthropic"


def test_several_keys_make_a_load_balanced_pool() -> None:
    s = Settings(_env_file=None, openai_api_key="k1, k2", fallback_providers=["test"])  # type: ignore[call-arg, arg-type]
    chain = build_chain(s)
    assert [p.label for p in chain[0]] == ["openai#1", "openai#2"]
    assert chain[1][0].name == "test"


def test_missing_key_is_a_clear_error() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(MissingAPIKeyError, match="Set OPENAI_API_KEY") as caught:
        build_chain(s, provider="openai")
    assert isinstance(caught.value, ConfigurationError)
    assert (caught.value.provider, caught.value.key_var) == ("openai", "OPENAI_API_KEY")
    assert caught.value.code == "missing_api_key"
    assert "--provider" not in str(caught.value)  # frontends add their own advice
    with pytest.raises(ConfigurationError, match="LOCAL_BASE_URL"):
        build_chain(s, provider="local")


def test_every_setting_is_in_the_env_template() -> None:
    import re
    from importlib import resources

    text = resources.files("agent_template").joinpath("env.example").read_text()
    named = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - named == set(), "document these in env.example"
    assert named - fields == set(), "env.example names settings that do not exist"
    template_env = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.MULTILINE))
    load_settings(**{k.lower(): v for k, v in template_env.items() if v})  # valid as written


BASE_URL_VARS = (
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "DEEPSEEK_BASE_URL",
    "QWEN_BASE_URL",
    "OLLAMA_HOST",
    "LOCAL_BASE_URL",
)


@pytest.mark.parametrize("var", BASE_URL_VARS)
@pytest.mark.parametrize(
    "value", ["localhost:8000/v1", "ftp://example.com/v1", "http://", "http://host:port/v1"]
)
def test_base_urls_must_be_http_urls_with_a_host(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert f"{var}: expected an http:// or https:// URL with a host" in message
    assert repr(value) in message


@pytest.mark.parametrize("var", BASE_URL_VARS)
def test_good_base_urls_are_kept(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "https://proxy.example.com:8443/v1")
    assert getattr(load_settings(), var.lower()) == "https://proxy.example.com:8443/v1"


def test_the_env_file_format_and_what_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    from pathlib import Path

    env = Path(str(tmp_path)) / ".env"
    env.write_text(
        "# a comment\n"
        "\n"
        "export SERVER_HOST=0.0.0.0\n"
        "SERVER_PORT = 9000   # an inline comment\n"
        "OPENAI_API_KEY='sk-single # not a comment'\n"
        'LOCAL_API_KEY="line\\nbreak \\"quoted\\""\n'
        "max_turns=7\n"
        "NOT_A_SETTING=ignored\n"
        "MAX_CONCURRENT_TASKS=3\n"
    )
    monkeypatch.setenv("MAX_CONCURRENT_TASKS", "4")  # the environment beats the file
    settings = Settings(_env_file=env, max_turns=9)  # and an argument beats both
    assert settings.server_host == "0.0.0.0"
    assert settings.server_port == 9000
    assert settings.api_key("openai") == "sk-single # not a comment"
    assert settings.api_key("local") == 'line\nbreak "quoted"'
    assert settings.max_concurrent_tasks == 4
    assert settings.max_turns == 9
    assert Settings(_env_file=None).server_port == 8000  # type: ignore[call-arg]
    assert Settings(_env_file=Path(str(tmp_path)) / "missing").server_port == 8000


def test_loading_settings_imports_no_settings_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from agent_template.config import load_settings\n"
        "load_settings()\n"
        "print(sorted({'pydantic_settings', 'dotenv'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
