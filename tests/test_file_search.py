"""Vector stores and the Responses API's file_search, as the `openai` SDK drives them, on SQLite (FTS5) and
PostgreSQL (tsvector): files uploaded, added to a store (chunked and indexed), searched directly and by a
scripted model through file_search, answered with a file citation; another account sees none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from kimi_gateway.testing import GatewayProcess
from tests import billing, services
from tests.billing import K25
from tests.fakes.upstream import FakeUpstream
from tests.fakes.web import FileReader

RETURNS = (
    "Returns and refunds.\n\nItems may be returned within 30 days of delivery, with the receipt. Refunds go "
    "back to the card used to pay, within five business days of the item reaching our warehouse.\n\n"
    + "Gift cards cannot be refunded. "
    * 3
)
SHIPPING = "Shipping.\n\nWe ship worldwide. Parcels arrive in 5 to 7 business days; express takes 2 days."


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest, fake_servers: dict[str, FakeUpstream], tmp_path: Path
) -> Iterator[tuple[GatewayProcess, billing.Operator]]:
    database = ""
    made = None
    if request.param == "postgresql":
        made = services.fresh_postgres_database()
        database = f'database_url = "{made}"\n'
    gw = billing.start(tmp_path / "gw", database + billing.config(fake_servers["moon"]))
    try:
        yield gw, billing.Operator(gw)
    finally:
        gw.stop()
        if made is not None:
            services.drop_postgres_database(made)


def _client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)


def _upload(client: openai.OpenAI, name: str, text: str) -> str:
    made = client.files.create(file=(name, text.encode()), purpose="assistants")
    assert made.status in ("processed", "ok", "uploaded"), made
    return made.id


def test_vector_store_search_and_file_search(
    gateway: tuple[GatewayProcess, billing.Operator], fakes: dict[str, FakeUpstream]
) -> None:
    gw, ops = gateway
    key = ops.key_for("acct_docs")
    ops.recharge("acct_docs", "5")
    client = _client(gw, key)
    returns, shipping = _upload(client, "returns.txt", RETURNS), _upload(client, "shipping.txt", SHIPPING)

    store = client.vector_stores.create(name="policies", file_ids=[returns])
    added = client.vector_stores.files.create(vector_store_id=store.id, file_id=shipping)
    assert added.status == "completed" and added.vector_store_id == store.id
    store = client.vector_stores.retrieve(store.id)
    assert store.file_counts.completed == 2 and store.file_counts.total == 2 and store.usage_bytes > 0
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=store.id)] == [shipping, returns]

    # The words of a question, stemmed ("returned" finds "return"), ranked: the returns policy first.
    page = client.vector_stores.search(vector_store_id=store.id, query="how long to return an item?")
    hits = list(page)
    assert hits[0].file_id == returns and hits[0].filename == "returns.txt"
    assert "30 days" in hits[0].content[0].text
    assert 0 < hits[0].score < 1
    shipped = list(client.vector_stores.search(vector_store_id=store.id, query="express shipping"))
    assert shipped[0].file_id == shipping

    # The model searches the store through file_search and cites the file it read.
    fakes["moon"].agent = FileReader()
    response = client.responses.create(
        model=K25,
        input="Within how many days can I return something?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}],
        include=["file_search_call.results"],
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["file_search_call", "message"]
    call = response.output[0]
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == ["Within how many days can I return something?"]
    assert call.results is not None and call.results[0].file_id == returns
    assert "30 days" in response.output_text and response.output_text.startswith("According to returns.txt")
    annotations = response.output[1].content[0].annotations  # type: ignore[union-attr]
    cited = [a for a in annotations if a.type == "file_citation"]
    assert cited and cited[0].file_id == returns and cited[0].filename == "returns.txt"  # type: ignore[union-attr]
    sent = fakes["moon"].requests[1].body["messages"][-1]
    assert sent["role"] == "tool" and json.loads(sent["content"])["results"][0]["filename"] == "returns.txt"
    assert len(json.loads(sent["content"])["results"]) <= 2  # max_num_results

    # Streamed: the call's own events, then the cited answer.
    events = list(
        client.responses.create(
            model=K25,
            input="Within how many days can I return something?",
            tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert [k for k in kinds if k.startswith("response.file_search_call.")] == [
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
    ]
    final = events[-1]
    assert final.type == "response.completed"
    assert [i.type for i in final.response.output] == ["file_search_call", "message"]
    assert final.response.output[0].results is None  # not asked for with `include`

    # Another account sees neither the store nor the files.
    stranger = _client(gw, ops.key_for("acct_other"))
    with pytest.raises(openai.NotFoundError):
        stranger.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        list(stranger.vector_stores.search(vector_store_id=store.id, query="return"))
    with pytest.raises(openai.NotFoundError):
        stranger.vector_stores.files.create(vector_store_id=store.id, file_id=returns)
    assert list(stranger.vector_stores.list()) == []

    # A deleted file leaves the store; a deleted store is gone.
    client.files.delete(returns)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1
    assert [
        h.file_id for h in client.vector_stores.search(vector_store_id=store.id, query="return days")
    ] in (
        [],
        [shipping],
    )
    deleted = client.vector_stores.delete(store.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_a_file_without_text_is_added_as_failed(
    gateway: tuple[GatewayProcess, billing.Operator], fakes: dict[str, FakeUpstream]
) -> None:
    gw, ops = gateway
    client = _client(gw, ops.key_for("acct_empty"))
    broken = client.files.create(file=("scan.pdf", b"%PDF-1.4 not really a PDF"), purpose="assistants")
    store = client.vector_stores.create(name="x")
    added = client.vector_stores.files.create(vector_store_id=store.id, file_id=broken.id)
    assert added.status == "failed" and added.last_error is not None
    assert client.vector_stores.retrieve(store.id).file_counts.failed == 1
    result: Any = list(client.vector_stores.search(vector_store_id=store.id, query="anything"))
    assert result == []
