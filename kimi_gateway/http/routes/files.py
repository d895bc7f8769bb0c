"""Moonshot's files API (file-extract): upload, list, describe, extracted content, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from starlette.requests import Request

from kimi_gateway.accounts.keys import KeyRecord
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


@router.post("/v1/files", summary="Upload a file; its text is extracted at once (purpose=file-extract)")
async def upload(
    request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    gateway, account = _context(request)
    data = await file.read()
    info = await gateway.files.add(account, file.filename or "upload", purpose, data)
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
    info, text = await gateway.files.text(account, file_id)
    _, data = await gateway.files.data(account, file_id)
    return {
        "content": text,
        "file_type": _file_type(data[:8]),
        "filename": info.filename,
        "title": "",
        "type": "file",
    }


@router.delete("/v1/files/{file_id}", summary="Delete a file and its bytes")
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    gateway, account = _context(request)
    await gateway.files.delete(account, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
