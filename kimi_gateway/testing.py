"""Running a real gateway process on a free loopback port: for tests and benchmarks, as users run it."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

LOCAL_MODEL = "smollm2-135m-instruct"


def isolate_environment() -> Path:
    """Keep a test or bench run away from the machine's own gateway: the data directory's default moves
    to a temporary folder (XDG_DATA_HOME, removed at exit), and configuration set in the environment
    (KIMI_GATEWAY_<KEY>, DATABASE_URL, REDIS_URL) is dropped, for this process and the gateways it
    starts. A test that wants an environment key passes it to its gateway itself."""
    from kimi_gateway.config import CONFIG_ENV, environment_keys

    for name in [*environment_keys(), CONFIG_ENV]:
        os.environ.pop(name, None)
    root = Path(tempfile.mkdtemp(prefix="kimi-gateway-data-"))
    atexit.register(shutil.rmtree, root, True)
    os.environ["XDG_DATA_HOME"] = str(root)
    return root


def wait_until(check: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Calls `check` until it returns something true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        config: str = "",
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "gateway.toml"
        # Each process keeps its database in its own folder, never in the user's data directory.
        if "data_dir" not in config:
            config = 'data_dir = "data"\n' + config
        self.config_path.write_text(config)
        self.log_path = workdir / "gateway.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kimi_gateway",
                "serve",
                "--port",
                str(self.port),
                "--config",
                str(self.config_path),
                *(args or []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                if httpx.get(self.base_url + "/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log_path.read_text()}")

    @property
    def api(self) -> str:
        return self.base_url + "/v1"

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # llama.cpp writes plain lines to stderr
        return records

    def request_record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if record.get("msg") == "request" and record.get("request_id") == request_id:
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no log line for {request_id}")

    def wait_for_workers(self, workers: int, timeout: float = 120.0) -> None:
        """Under `--workers N`, ready means one worker answers: wait until every worker has logged its
        start-up (at log level info, as tests run it)."""
        deadline = time.monotonic() + timeout
        while self.log_path.read_text().count("Application startup complete") < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every one of {workers} workers started")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


async def _postgres_admin(url: str, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(url, timeout=3)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_postgres_database(server_url: str, prefix: str) -> str:
    """A new empty database on the server of `server_url` (a plain postgresql:// URL); its URL.

    Raises whatever connecting raised when the server cannot be reached. The caller drops it.
    """
    name = prefix + secrets.token_hex(6)
    asyncio.run(_postgres_admin(server_url, f'CREATE DATABASE "{name}"'))
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(server_url: str, url: str) -> None:
    """Drop a database `create_postgres_database` made, even with connections still open to it."""
    name = url.rsplit("/", 1)[1]
    asyncio.run(_postgres_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
