"""file_search's files: an uploaded file added to a vector store is cut into chunks there, from the text
the upload extracted (PDFs, text files; storage/vector_stores.py indexes and searches them)."""

from __future__ import annotations

from typing import Any

from kimi_gateway.media.files import FileStore
from kimi_gateway.storage.models import VectorStoreFile
from kimi_gateway.storage.vector_stores import VectorStores, chunks_of


async def attach(
    files: FileStore,
    stores: VectorStores,
    account: str | None,
    store_id: str,
    file_id: str,
    attributes: dict[str, Any] | None = None,
) -> VectorStoreFile:
    """The file (the account's own, else 404) in the store: `completed` with its chunks, or `failed` with
    why (a file whose text could not be read, or that has none)."""
    await stores.get(account, store_id)
    info = await files.get(account, file_id)
    chunks: list[str] | None = None
    error = None
    if info.status != "ok":
        error = info.status_details or "the file's text could not be read"
    else:
        _, text = await files.text(account, file_id)
        chunks = chunks_of(text) or None
        if chunks is None:
            error = "the file has no text to search (upload it with purpose 'assistants' or 'user_data')"
    return await stores.add_file(account, store_id, file_id, chunks, error, attributes)
