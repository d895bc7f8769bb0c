"""Moonshot's files API (file-extract): upload, list, describe, extracted content, delete."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.core.disconnects import DisconnectWatch
from kimi_gateway.errors import APIError
from kimi_gateway.http.disconnects import client_gone
from kimi_gateway.runtime import Gateway

router = APIRouter(tags=["files"])


def _context(request: Request) -> tuple[Gateway, str | None]:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    return gateway, key.account_id if key else None


def _file_type(head: bytes) -> str:
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif")):
        if head.startswith(magic):
            return mime
    return "text/plain"


@router.post(
    "/v1/files",
    summary="Upload a file; its text is extracted at once (purpose=file-extract)",
    response_model=None,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "purpose"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {
                                "type": "string",
                                "enum": ["file-extract", "assistants", "user_data", "image", "video"],
                            },
                        },
                    }
                }
            },
        }
    },
)
async def upload(request: Request) -> dict[str, Any] | Response:
    gateway, account = _context(request)
    key: KeyRecord | None = request.state.key
    # Admitted by the account's rate limits before the body is even read.
    async with gateway.accounts.limited(key) if key is not None else nullcontext():
        # The body's size is capped as it streams in (BodyLimitMiddleware), whatever its framing.
        form = await request.form(max_files=1, max_fields=4)
        try:
            file, purpose = form.get("file"), form.get("purpose")
            if not isinstance(file, UploadFile) or not isinstance(purpose, str):
                raise APIError(
                    400,
                    "Send multipart fields 'file' (the file) and 'purpose' (file-extract).",
                    code="missing_required_parameter",
                )
            data = await file.read()
            # Extraction stops if the client goes away (a PDF can take its whole budget): the file is
            # then not stored.
            with DisconnectWatch(client_gone(request.receive)) as watch:
                try:
                    info = await gateway.files.add(account, file.filename or "upload", purpose, data)
                except asyncio.CancelledError:
                    if not watch.fired:
                        raise
                    watch.absorb()
                    return Response(status_code=499)
        finally:
            await form.close()
    return info.public()


@router.get("/v1/files", summary="The calling account's files")
async def list_files(request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    listed = [f.public() for f in await gateway.files.list(account)]
    # has_more: the SDK's paginator asks for the next page until told there is none.
    return {"object": "list", "data": listed, "has_more": False}


@router.get("/v1/files/{file_id}", summary="One file's description")
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    return (await gateway.files.get(account, file_id)).public()


@router.get("/v1/files/{file_id}/content", summary="The text extracted from a file")
async def file_content(file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    info, text, head = await gateway.files.content(account, file_id)
    return {
        "content": text,
        "file_type": _file_type(head),
        "filename": info.filename,
        "title": "",
        "type": "file",
    }


@router.delete("/v1/files/{file_id}", summary="Delete a file and its bytes")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    await gateway.files.delete(account, file_id)
    await gateway.vector_stores.forget_file(account, file_id)  # and it leaves every vector store
    return {"id": file_id, "object": "file", "deleted": True}
