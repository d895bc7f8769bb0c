"""API keys and authentication: hashed storage, key kinds, the bootstrap rule, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kimi_gateway.accounts.keys import KeyStore, key_hash
from kimi_gateway.storage import Database
from kimi_gateway.storage.models import LedgerEntry
from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess, free_port
from tests.services import drop_postgres_database, fresh_postgres_database

HI = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_gateway", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Roomy limits: these tests are about keys, not the free tier's 3 requests a minute.
ROOMY = "[accounts]\ntiers = [{ tier = 0, min_recharge = 0, concurrency = 50, rpm = 1000 }]\n"


def _workdir(tmp_path: Path, config: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text('data_dir = "data"\n' + config + ROOMY)
    return path


def _create(config: Path, *args: str) -> tuple[str, str]:
    result = _cli(config, "keys", "create", *args)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    account = result.stderr.split("account ")[1].split(",")[0]
    return key, account


def _post(
    gw: GatewayProcess, key: str | None, path: str = "/v1/chat/completions", json: object = HI
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gw.base_url + path, json=json, headers=headers, timeout=60)


@pytest.fixture()
def keyed(tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path, str, str]]:
    """A gateway whose database already holds an inference key and a management key (made with the CLI)."""
    config = _workdir(tmp_path)
    inference, account = _create(config, "--name", "app")
    management, _ = _create(config, "--name", "admin", "--kind", "management", "--account", account)
    gw = GatewayProcess(tmp_path, config.read_text())
    yield gw, config, inference, management
    gw.stop()


def test_bootstrap_without_keys_serves_loopback(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, "")
    try:
        assert _post(gw, None).status_code == 200
        assert httpx.get(gw.api + "/models").status_code == 200
        assert httpx.get(gw.base_url + "/api/v1/key").json()["data"]["bootstrap"] is True
        assert "WITHOUT authentication" in gw.log_path.read_text()
    finally:
        gw.stop()


def test_refuses_to_bind_beyond_loopback_without_keys(tmp_path: Path) -> None:
    config = _workdir(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kimi_gateway",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr


def test_missing_unknown_and_valid_keys(keyed: tuple[GatewayProcess, Path, str, str]) -> None:
    gw, _, inference, _ = keyed
    for key in (None, "sk-kg-not-a-real-key", "Basic abc"):
        response = _post(gw, key)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert set(error) >= {"message", "type", "param", "code"}
        # A refused request is still logged once, under the id its response carries.
        assert gw.request_record(response.headers["x-request-id"])["status"] == 401
    assert _post(gw, inference).status_code == 200
    client = openai.OpenAI(base_url=gw.api, api_key=inference, max_retries=0)
    assert client.models.list().data
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.api, api_key="sk-kg-wrong", max_retries=0).models.list()
    # Service endpoints stay open for probes.
    assert httpx.get(gw.base_url + "/health").status_code == 200
    assert httpx.get(gw.base_url + "/ready").status_code == 200


def test_keys_are_stored_only_as_hashes(keyed: tuple[GatewayProcess, Path, str, str], tmp_path: Path) -> None:
    _, config, inference, management = keyed
    listing = _cli(config, "keys", "list")
    assert listing.returncode == 0
    assert key_hash(inference) in listing.stdout
    assert inference not in listing.stdout and inference[10:30] not in listing.stdout
    database = (tmp_path / "data" / "gateway.db").read_bytes()
    for key in (inference, management):
        assert key.encode() not in database and key[10:].encode() not in database
        assert key_hash(key).encode() in database


def test_key_kinds_are_separate(keyed: tuple[GatewayProcess, Path, str, str]) -> None:
    gw, _, inference, management = keyed
    response = _post(gw, management)
    assert response.status_code == 403 and response.json()["error"]["code"] == "wrong_key_kind"
    response = _post(gw, inference, "/api/v1/keys", {"name": "sneaky"})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Only management keys can perform this operation."
    # Either kind may ask about itself.
    assert (
        httpx.get(gw.base_url + "/api/v1/key", headers={"Authorization": f"Bearer {management}"}).json()[
            "data"
        ]["is_management_key"]
        is True
    )


def test_management_api_lifecycle(keyed: tuple[GatewayProcess, Path, str, str]) -> None:
    gw, _, _, management = keyed
    admin = {"Authorization": f"Bearer {management}"}
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = httpx.post(
        gw.base_url + "/api/v1/keys",
        json={"name": "ci", "limit": 5, "rate_limit_rpm": 60, "expires_at": expires},
        headers=admin,
    )
    assert created.status_code == 201
    new_key, record = created.json()["key"], created.json()["data"]
    assert new_key.startswith("sk-kg-") and record["label"] == new_key[:10] + "..."
    assert record["hash"] == key_hash(new_key) and record["limit"] == 5.0
    assert _post(gw, new_key).status_code == 200

    listed = httpx.get(gw.base_url + "/api/v1/keys", headers=admin).json()["data"]
    assert {k["name"] for k in listed} == {"app", "admin", "ci"}
    assert all("key" not in k for k in listed)  # the plaintext is shown only at creation

    me = httpx.get(gw.base_url + "/api/v1/key", headers={"Authorization": f"Bearer {new_key}"}).json()["data"]
    assert me["limit"] == 5.0 and me["rate_limit"] == {"requests": 60, "interval": "1m"} and me["label"]

    url = gw.base_url + f"/api/v1/keys/{record['hash']}"
    patched = httpx.patch(url, json={"name": "ci-renamed", "disabled": True}, headers=admin)
    assert patched.status_code == 200 and patched.json()["data"]["disabled"] is True
    assert _post(gw, new_key).status_code == 401  # at once on this instance
    assert httpx.patch(url, json={"disabled": False}, headers=admin).status_code == 200
    assert _post(gw, new_key).status_code == 200
    assert httpx.delete(url, headers=admin).json() == {"deleted": True}
    assert _post(gw, new_key).status_code == 401
    assert httpx.get(gw.base_url + "/api/v1/keys/" + "0" * 64, headers=admin).status_code == 404
    bad = httpx.post(gw.base_url + "/api/v1/keys", json={"name": ""}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"


def test_other_accounts_keys_are_invisible(keyed: tuple[GatewayProcess, Path, str, str]) -> None:
    gw, config, _, management = keyed
    outsider, _ = _create(config, "--name", "outsider")  # a new account
    listed = httpx.get(gw.base_url + "/api/v1/keys", headers={"Authorization": f"Bearer {management}"}).json()
    assert key_hash(outsider) not in {k["hash"] for k in listed["data"]}
    response = httpx.get(
        gw.base_url + f"/api/v1/keys/{key_hash(outsider)}", headers={"Authorization": f"Bearer {management}"}
    )
    assert response.status_code == 404


def test_cli_disable_reaches_a_running_gateway(keyed: tuple[GatewayProcess, Path, str, str]) -> None:
    gw, config, inference, _ = keyed
    assert _post(gw, inference).status_code == 200
    assert _cli(config, "keys", "disable", key_hash(inference)).returncode == 0
    deadline = time.monotonic() + 5 + 1  # the default cache_seconds is the bound
    while time.monotonic() < deadline and _post(gw, inference).status_code == 200:
        time.sleep(0.25)
    assert _post(gw, inference).status_code == 401
    assert _cli(config, "keys", "disable", "f" * 64).returncode == 1


def test_expired_key_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
        await db.migrate()
        store = KeyStore(db)
        past = datetime.now(UTC) - timedelta(minutes=1)
        key, _ = await store.create(name="old", expires_at=past)
        assert await store.authenticate(key) is None
        live, _ = await store.create(name="live")
        assert (await store.authenticate(live)) is not None
        await db.close()

    asyncio.run(scenario())


# ---- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


def test_postgres_migrations_keys_and_idempotent_ledger(postgres_url: str) -> None:
    async def scenario() -> None:
        db = Database(postgres_url.replace("postgresql://", "postgresql+asyncpg://"))
        await db.migrate()
        await db.migrate()  # running it again changes nothing
        store = KeyStore(db)
        key, record = await store.create(name="pg", kind="management")
        assert (await store.authenticate(key)) == record
        assert await store.authenticate(key + "x") is None
        async with db.session() as session, session.begin():
            session.add(LedgerEntry(id="charge:gen-1", account_id=record.account_id, kind="charge", amount=1))
        with pytest.raises(IntegrityError):  # one id, one charge: a replayed write cannot count twice
            async with db.session() as session, session.begin():
                session.add(
                    LedgerEntry(id="charge:gen-1", account_id=record.account_id, kind="charge", amount=1)
                )
        async with db.session() as session:
            entries = (await session.scalars(select(LedgerEntry))).all()
        assert len(entries) == 1
        await db.close()

    asyncio.run(scenario())


def test_gateway_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, f'database_url = "{postgres_url}"\n')
    try:
        created = httpx.post(gw.base_url + "/api/v1/keys", json={"name": "first"})  # bootstrap: no keys yet
        assert created.status_code == 201
        key = created.json()["key"]
        assert _post(gw, None).status_code == 401
        assert _post(gw, key).status_code == 200
    finally:
        gw.stop()
