"""OpenAI's vector stores API (what the Responses API's file_search searches): stores, their files, search.

Files are added whole and at once (no batches to poll): a file's status is `completed` (its text chunked and
indexed) or `failed` (with `last_error`) as soon as the call returns. Everything is the calling account's.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.runtime import Gateway
from kimi_gateway.storage.models import VectorStore, VectorStoreFile
from kimi_gateway.tools.file_search import attach

router = APIRouter(tags=["vector stores"])

Attributes = dict[str, str | int | float | bool]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreateStore(_Body):
    name: str = Field(default="", max_length=256)
    file_ids: list[str] = Field(default_factory=list, max_length=100)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)


class AddFile(_Body):
    file_id: str = Field(max_length=40)
    attributes: Attributes | None = Field(default=None, max_length=16)


class Search(_Body):
    query: Annotated[str, Field(max_length=2000)] | Annotated[list[str], Field(max_length=16)]
    max_num_results: int = Field(default=10, ge=1, le=50)


def _context(request: Request) -> tuple[Gateway, str | None]:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    return gateway, key.account_id if key else None


def _epoch(value: Any) -> int:
    return int(value.timestamp())


async def _store(gateway: Gateway, row: VectorStore) -> dict[str, Any]:
    counts = await gateway.vector_stores.file_counts(row.id)
    used = counts.pop("usage_bytes")
    return {
        "id": row.id,
        "object": "vector_store",
        "created_at": _epoch(row.created_at),
        "name": row.name,
        "usage_bytes": used,
        "file_counts": counts,
        "status": "completed",
        "last_active_at": _epoch(row.last_active_at),
        "expires_after": None,
        "expires_at": None,
        "metadata": orjson.loads(row.metadata_json) if row.metadata_json else {},
    }


def _file(row: VectorStoreFile) -> dict[str, Any]:
    error = {"code": "invalid_file", "message": row.last_error} if row.status == "failed" else None
    return {
        "id": row.file_id,
        "object": "vector_store.file",
        "created_at": _epoch(row.created_at),
        "vector_store_id": row.vector_store_id,
        "usage_bytes": row.usage_bytes,
        "status": row.status,
        "last_error": error,
        "attributes": orjson.loads(row.attributes) if row.attributes else {},
        "chunking_strategy": {"type": "other"},
    }


def _page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


@router.post("/v1/vector_stores", summary="Create a vector store (and add files to it)")
async def create_store(body: CreateStore, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    store = await gateway.vector_stores.create(account, body.name, body.metadata)
    for file_id in body.file_ids:
        await attach(gateway.files, gateway.vector_stores, account, store.id, file_id)
    return await _store(gateway, store)


@router.get("/v1/vector_stores", summary="The calling account's vector stores")
async def list_stores(request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    return _page([await _store(gateway, row) for row in await gateway.vector_stores.stores(account)])


@router.get("/v1/vector_stores/{store_id}", summary="One vector store")
async def get_store(store_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    return await _store(gateway, await gateway.vector_stores.get(account, store_id))


@router.delete("/v1/vector_stores/{store_id}", summary="Delete a vector store (its files stay)")
async def delete_store(store_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    await gateway.vector_stores.delete(account, store_id)
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


@router.post("/v1/vector_stores/{store_id}/files", summary="Add an uploaded file to a vector store")
async def add_file(store_id: str, body: AddFile, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    row = await attach(gateway.files, gateway.vector_stores, account, store_id, body.file_id, body.attributes)
    return _file(row)


@router.get("/v1/vector_stores/{store_id}/files", summary="A vector store's files")
async def list_files(store_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    return _page([_file(row) for row in await gateway.vector_stores.files(account, store_id)])


@router.get("/v1/vector_stores/{store_id}/files/{file_id}", summary="One file of a vector store")
async def get_file(store_id: str, file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    return _file(await gateway.vector_stores.file(account, store_id, file_id))


@router.delete("/v1/vector_stores/{store_id}/files/{file_id}", summary="Take a file out of a vector store")
async def remove_file(store_id: str, file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    await gateway.vector_stores.remove_file(account, store_id, file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@router.post("/v1/vector_stores/{store_id}/search", summary="Search a vector store's files")
async def search(store_id: str, body: Search, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    query = body.query if isinstance(body.query, str) else " ".join(body.query)
    hits = await gateway.vector_stores.search(account, [store_id], query[:2000], body.max_num_results)
    names: dict[str, str] = {}
    data = []
    for hit in hits:
        if hit.file_id not in names:
            names[hit.file_id] = (await gateway.files.get(account, hit.file_id)).filename
        data.append(
            {
                "file_id": hit.file_id,
                "filename": names[hit.file_id],
                "score": hit.score,
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.chunk}],
            }
        )
    searched = [body.query] if isinstance(body.query, str) else body.query
    return {
        "object": "vector_store.search_results.page",
        "search_query": searched,
        "data": data,
        "has_more": False,
        "next_page": None,
    }
