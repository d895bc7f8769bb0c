"""Configuration from the environment, over the file: every section reachable, the same validation and
messages as the file, the well-known DATABASE_URL and REDIS_URL, `config show` with secrets masked, and
tests kept away from the machine's own data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from kimi_gateway.config import ENV_PREFIX, ConfigError, GatewayConfig, load_config
from kimi_gateway.testing import GatewayProcess, free_port


def _changed(value: Any) -> str | None:
    """Another valid value for a scalar key, as an environment variable spells it."""
    if isinstance(value, bool):
        return "false" if value else "true"
    if isinstance(value, int):
        return str(value + 1)
    if isinstance(value, float):
        return str(value + 0.5)
    if isinstance(value, str):
        return value + "x" if value else "x"
    return None


def _scalar_keys(model: BaseModel, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _scalar_keys(value, (*path, name))
        elif _changed(value) is not None:
            yield (*path, name), value


def test_every_section_is_reachable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """One scalar key of every section (nested ones too), set only in the environment, is read."""
    defaults = GatewayConfig()
    sections: dict[tuple[str, ...], tuple[tuple[str, ...], Any]] = {}
    for path, value in _scalar_keys(defaults):
        if path[:-1] and path[-1] not in ("log_level", "backend", "style"):  # values with fixed choices
            sections.setdefault(path[:-1], (path, value))
    assert {p[0] for p in sections} >= {"server", "engine", "routing", "accounts", "media", "tools"}
    assert ("tools", "web_search") in sections  # a section two levels down
    for path, value in sections.values():
        monkeypatch.setenv(ENV_PREFIX + "__".join(path).upper(), str(_changed(value)))
    config = load_config()
    for path, value in sections.values():
        got: Any = config
        for part in path:
            got = getattr(got, part)
        assert str(got).lower() == str(_changed(value)).lower() or got == type(value)(_changed(value)), path


def test_the_environment_wins_over_the_file_key_by_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[server]\nport = 8100\nhost = "0.0.0.0"\n\n[tools.web_search]\nmax_results = 3\n')
    monkeypatch.setenv("KIMI_GATEWAY_SERVER__PORT", "9001")
    monkeypatch.setenv("KIMI_GATEWAY_TOOLS__WEB_SEARCH__BASE_URL", "http://searxng:8080")
    monkeypatch.setenv("KIMI_GATEWAY_MEDIA__ALLOW_HOSTS", '["files.internal"]')  # a list, as JSON
    monkeypatch.setenv("KIMI_GATEWAY_PROVIDERS__MOONSHOT__API_KEY_ENV", "MY_MOONSHOT_KEY")  # a table's entry
    config = load_config(path)
    assert (config.server.port, config.server.host) == (9001, "0.0.0.0")  # the file's other keys stay
    assert (config.tools.web_search.base_url, config.tools.web_search.max_results) == (
        "http://searxng:8080",
        3,
    )
    assert config.media.allow_hosts == ["files.internal"]
    assert config.providers["moonshot"].api_key_env == "MY_MOONSHOT_KEY"


def test_database_and_redis_urls_by_their_well_known_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://gw:pw@db:5432/gateway")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    config = load_config()
    assert (config.database_url, config.redis_url) == (
        "postgresql://gw:pw@db:5432/gateway",
        "redis://redis:6379/0",
    )
    monkeypatch.setenv("KIMI_GATEWAY_DATABASE_URL", "postgresql://other/db")  # ours, when both are set
    assert load_config().database_url == "postgresql://other/db"


@pytest.mark.parametrize(
    ("key", "variable", "toml", "value"),
    [
        ("server.port", "KIMI_GATEWAY_SERVER__PORT", '[server]\nport = "eighty"\n', "eighty"),
        ("server.prot", "KIMI_GATEWAY_SERVER__PROT", "[server]\nprot = 1\n", "1"),
        ("tools.max_steps", "KIMI_GATEWAY_TOOLS__MAX_STEPS", "[tools]\nmax_steps = 0\n", "0"),
    ],
)
def test_a_bad_value_gets_the_files_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, variable: str, toml: str, value: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as from_file:
        load_config(path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as from_env:
        load_config()
    file_line, env_line = str(from_file.value).splitlines()[1], str(from_env.value).splitlines()[1]
    assert file_line.startswith(f"  {key}: ") and file_line.endswith(f"(from {path})")
    assert env_line.startswith(f"  {key}: ") and env_line.endswith(f"(from {variable})")
    assert file_line.rsplit(" (from", 1)[0] == env_line.rsplit(" (from", 1)[0]  # the same words


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_gateway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_config_show_masks_secrets_and_names_the_environment() -> None:
    env = {
        "DATABASE_URL": "postgresql://gw:hunter2@db:5432/gateway",
        "REDIS_URL": "redis://:redispw@redis:6379/0",
        "KIMI_GATEWAY_SERVER__PORT": "9001",
    }
    shown = _cli("config", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout and "redispw" not in shown.stdout
    assert "postgresql://gw:***@db:5432/gateway" in shown.stdout
    first = shown.stdout.splitlines()[0]
    assert first == "# set from the environment: DATABASE_URL, KIMI_GATEWAY_SERVER__PORT, REDIS_URL"
    assert '"port": 9001' in shown.stdout


def test_a_bad_environment_value_is_one_line_not_a_traceback() -> None:
    refused = _cli("serve", env={"KIMI_GATEWAY_SERVER__PORT": "eighty"})
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert "server.port: Input should be a valid integer" in refused.stderr
    assert "(from KIMI_GATEWAY_SERVER__PORT)" in refused.stderr


def test_a_served_gateway_reads_its_environment(tmp_path: Path) -> None:
    """A real server, its body limit set only in the environment."""
    gw = GatewayProcess(tmp_path, env={"KIMI_GATEWAY_SERVER__MAX_BODY_BYTES": "4096"})
    try:
        big = {"model": "x", "messages": [{"role": "user", "content": "a" * 8000}]}
        refused = httpx.post(gw.base_url + "/v1/chat/completions", json=big, timeout=30)
        assert refused.status_code == 413, refused.text
        small = {"model": "x", "messages": [{"role": "user", "content": "a" * 100}]}
        assert httpx.post(gw.base_url + "/v1/chat/completions", json=small, timeout=30).status_code != 413
    finally:
        gw.stop()


def test_tests_never_see_the_machines_data_directory() -> None:
    """The default data directory is the test run's own (XDG_DATA_HOME, set by the harness), and no
    configuration from the shell reaches the tests."""
    data_home = Path(os.environ["XDG_DATA_HOME"])
    assert load_config().data_dir == (data_home / "kimi-gateway").resolve()
    assert data_home != Path("~/.local/share").expanduser()
    assert not any(n.startswith(ENV_PREFIX) and "__" in n for n in os.environ)
    assert "DATABASE_URL" not in os.environ and "REDIS_URL" not in os.environ


def test_logs_are_json_for_machines_with_a_banner_and_no_library_noise(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path)
    try:
        lines = gw.log_path.read_text().splitlines()
    finally:
        gw.stop()
    parsed = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(parsed) == len([line for line in lines if line.strip()])  # every line is JSON
    banner = next(p for p in parsed if p["msg"].endswith("serving"))
    assert banner["api"] == f"{gw.base_url}/v1" and banner["chat"] == f"{gw.base_url}/chat"
    assert not any(p["logger"] == "alembic.runtime.plugins" for p in parsed)
    assert not any(p["msg"].startswith(("Context impl", "Will assume")) for p in parsed)


def test_logs_are_readable_lines_at_a_terminal(tmp_path: Path) -> None:
    """stderr a terminal (a pseudo-terminal here): no JSON, the banner's fields as key=value."""
    import pty
    import select

    port = free_port()
    leader, follower = pty.openpty()
    (tmp_path / "gateway.toml").write_text('data_dir = "data"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "kimi_gateway", "serve", "--port", str(port), "--config", "gateway.toml"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"Application startup complete" not in output and time.monotonic() < deadline:
            if select.select([leader], [], [], 1)[0]:
                output += os.read(leader, 65536)
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(leader)
    text = output.decode()
    assert "Application startup complete" in text
    assert not any(line.startswith("{") for line in text.splitlines())
    assert f"api=http://127.0.0.1:{port}/v1" in text and "serving" in text


def test_config_show_masks_every_urls_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from kimi_gateway.config import masked

    monkeypatch.setenv("KIMI_GATEWAY_TOOLS__WEB_SEARCH__BASE_URL", "http://user:hunter2@searx:8080")
    monkeypatch.setenv(
        "KIMI_GATEWAY_TOOLS__MCP__SERVERS", '{"shop": {"url": "https://mcp.example/sse?api_key=s3cret&x=1"}}'
    )
    shown = json.dumps(masked(load_config()))
    assert "hunter2" not in shown and "s3cret" not in shown
    assert "http://user:***@searx:8080" in shown and "api_key=***&x=1" in shown


def test_a_missing_file_or_a_bad_list_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.toml")
    monkeypatch.setenv("KIMI_GATEWAY_SERVER__CORS_ORIGINS", "https://a.example")  # a list must be JSON
    with pytest.raises(ConfigError, match="environment"):
        load_config()


def test_a_relative_data_dir_from_the_environment_is_the_working_directorys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gateway.toml").write_text('data_dir = "from-file"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(tmp_path / "conf" / "gateway.toml").data_dir == tmp_path / "conf" / "from-file"
    monkeypatch.setenv("KIMI_GATEWAY_DATA_DIR", "from-env")
    assert load_config(tmp_path / "conf" / "gateway.toml").data_dir == tmp_path / "from-env"
