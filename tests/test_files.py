"""The files API (Moonshot's file-extract), PDF text, OCR of scans, ms:// references, inline file parts."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess
from tests import images, pdfs
from tests.billing import K25, Operator, config, sdk, start
from tests.fakes.upstream import FakeUpstream


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


@pytest.fixture()
def filed(tmp_path: Path, moon: FakeUpstream) -> Iterator[tuple[GatewayProcess, str, str]]:
    """A keyed gateway with two funded accounts, small file quotas, and Moonshot's fake behind it."""
    gw = start(tmp_path / "gw", config(moon, extra="[media]\nmax_files = 4\nmax_file_bytes = 3000000\n"))
    ops = Operator(gw)
    alice, bob = ops.key_for("acct_alice"), ops.key_for("acct_bob")
    ops.recharge("acct_alice", "5")
    ops.recharge("acct_bob", "5")
    yield gw, alice, bob
    gw.stop()


def test_lifecycle_with_pdf_extraction(filed: tuple[GatewayProcess, str, str]) -> None:
    gw, alice, _ = filed
    client = sdk(gw, alice)
    pages = [f"Quarterly report page {n}: revenue {n * 100} dollars" for n in range(1, 21)]
    made = client.files.create(file=("report.pdf", pdfs.text_pdf(pages)), purpose="file-extract")  # type: ignore[arg-type]
    assert made.id.startswith("file-") and made.filename == "report.pdf" and made.status == "ok"
    assert made.bytes > 0 and made.purpose == "file-extract"

    assert [f.id for f in client.files.list()] == [made.id]
    assert client.files.retrieve(made.id).filename == "report.pdf"
    content = json.loads(client.files.content(made.id).text)
    assert content["file_type"] == "application/pdf" and content["filename"] == "report.pdf"
    text = content["content"]
    assert text.index("revenue 100 dollars") < text.index("revenue 2000 dollars")  # every page, in order
    assert "--- Page 20 ---" in text

    stored = list((gw.workdir / "data" / "files").iterdir())
    assert len(stored) == 2  # the bytes and the text
    assert client.files.delete(made.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    assert not any((gw.workdir / "data" / "files").iterdir())  # deleting a file deletes its bytes


def test_scanned_pdf_and_image_files_are_read_by_ocr(filed: tuple[GatewayProcess, str, str]) -> None:
    gw, alice, _ = filed
    client = sdk(gw, alice)
    scan = client.files.create(
        file=("scan.pdf", pdfs.scanned_pdf([images.receipt(), images.form()])),
        purpose="file-extract",  # type: ignore[arg-type]
    )
    text = json.loads(client.files.content(scan.id).text)["content"]
    assert "TOTAL" in text and "5.75" in text and "Lovelace" in text
    assert text.index("5.75") < text.index("Lovelace")  # page 1 before page 2
    picture = client.files.create(file=("chart.png", images.encoded(images.chart())), purpose="file-extract")  # type: ignore[arg-type]
    assert "Apples" in json.loads(client.files.content(picture.id).text)["content"]


def test_files_belong_to_their_account(filed: tuple[GatewayProcess, str, str]) -> None:
    gw, alice, bob = filed
    mine = sdk(gw, alice).files.create(file=("a.txt", b"alice's notes"), purpose="file-extract")  # type: ignore[arg-type]
    other = sdk(gw, bob)
    assert [f.id for f in other.files.list()] == []
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    assert sdk(gw, alice).files.retrieve(mine.id).id == mine.id  # still there


def test_quotas_and_bad_uploads(filed: tuple[GatewayProcess, str, str]) -> None:
    gw, alice, _ = filed
    headers = {"Authorization": f"Bearer {alice}"}

    def upload(data: bytes, purpose: str = "file-extract") -> httpx.Response:
        return httpx.post(
            gw.api + "/files", files={"file": ("x.txt", data)}, data={"purpose": purpose}, headers=headers
        )

    assert upload(b"x" * 3_000_001).status_code == 413
    assert upload(b"x" * 8_000_000).status_code == 413  # refused from its Content-Length, before reading
    assert "max file size is 2MB" in upload(b"x" * 3_000_001).json()["error"]["message"]
    assert upload(b"").status_code == 400
    missing = httpx.post(gw.api + "/files", data={"purpose": "file-extract"}, headers=headers)
    assert missing.status_code == 400 and "'file'" in missing.json()["error"]["message"]
    assert "Invalid purpose" in upload(b"hi", "fine-tune").json()["error"]["message"]
    broken = upload(b"%PDF-1.4 this is not really a PDF")
    assert broken.status_code == 200 and broken.json()["status"] == "error"
    for _ in range(3):
        assert upload(b"fine").status_code == 200
    over = upload(b"one too many")
    assert over.status_code == 400 and "max file count 4" in over.json()["error"]["message"]


def test_ms_references_and_inline_files_in_chat(
    filed: tuple[GatewayProcess, str, str], moon: FakeUpstream
) -> None:
    gw, alice, bob = filed
    receipt = sdk(gw, alice).files.create(file=("r.png", images.encoded(images.receipt())), purpose="image")  # type: ignore[arg-type]
    client = sdk(gw, alice)
    client.chat.completions.create(
        model=K25,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Total?"},
                    {"type": "image_url", "image_url": {"url": f"ms://{receipt.id}"}},
                    {"type": "image_url", "image_url": f"ms://{receipt.id}"},  # Moonshot's bare-string form
                ],
            }
        ],  # type: ignore[list-item]
    )
    sent = moon.requests[-1].body["messages"][0]["content"]
    assert [images.decoded(p["image_url"]["url"]).size for p in sent[1:]] == [(480, 320)] * 2

    clip = images.video(["red", "blue"])
    uploaded_clip = client.files.create(file=("clip.mp4", clip), purpose="video")  # type: ignore[arg-type]
    client.chat.completions.create(
        model=K25,
        messages=[
            {
                "role": "user",
                "content": [{"type": "video_url", "video_url": {"url": f"ms://{uploaded_clip.id}"}}],
            }
        ],  # type: ignore[list-item]
    )
    video = moon.requests[-1].body["messages"][0]["content"][0]["video_url"]["url"]
    assert base64.b64decode(video.split(",", 1)[1]) == clip

    refused = httpx.post(
        gw.api + "/chat/completions",
        headers={"Authorization": f"Bearer {bob}"},
        json={
            "model": K25,
            "messages": [{"role": "user", "content": [images.image_part(f"ms://{receipt.id}")]}],
        },
    )
    assert refused.status_code == 400 and "no file" in refused.json()["error"]["message"]

    notes = "Meeting notes: the launch moved to March 3."
    inline = {
        "type": "file",
        "file": {
            "filename": "notes.txt",
            "file_data": "data:text/plain;base64," + base64.b64encode(notes.encode()).decode(),
        },
    }
    pdf = {
        "type": "file",
        "file": {
            "filename": "memo.pdf",
            "file_data": "data:application/pdf;base64,"
            + base64.b64encode(pdfs.text_pdf(["Budget is 42 euros"])).decode(),
        },
    }
    client.chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": [{"type": "text", "text": "When?"}, inline, pdf]}],  # type: ignore[list-item]
    )
    parts = moon.requests[-1].body["messages"][0]["content"]
    assert all(p["type"] == "text" for p in parts)
    assert notes in parts[1]["text"] and "notes.txt" in parts[1]["text"]
    assert "Budget is 42 euros" in parts[2]["text"]


def test_local_model_reads_an_uploaded_receipt(gateway: GatewayProcess, client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("receipt.png", images.encoded(images.receipt())), purpose="image")  # type: ignore[arg-type]
    assert "5.75" in images.ask_receipt_total(client, f"ms://{uploaded.id}")
    client.files.delete(uploaded.id)
