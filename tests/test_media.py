"""Images: OCR for the embedded text-only model, checks and limits, forwarding to vision models, safe URLs."""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.media.ocr import OCR
from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import images
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import KEY, KEY_ENV, gateway_config

ASK = "What is the TOTAL on this receipt?"


def _chat(gw: GatewayProcess, content: list[dict[str, Any]], model: str = LOCAL_MODEL) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return httpx.post(gw.api + "/chat/completions", json=body, timeout=60)


def test_ocr_reads_rendered_text() -> None:
    ocr = OCR()
    receipt = ocr.read(images.receipt())
    assert "TOTAL" in receipt and "5.75" in receipt and "3.50" in receipt
    assert receipt.index("Coffee") < receipt.index("TOTAL")  # top to bottom
    form = ocr.read(images.form())
    assert all(word in form for word in ("Name", "Lovelace", "London", "1843"))
    chart = ocr.read(images.chart())
    assert all(word in chart for word in ("Fruit", "Apples", "Pears", "Plums"))


def test_local_model_reads_the_receipt_total(client: openai.OpenAI) -> None:
    url = images.data_url(images.encoded(images.receipt()))
    assert "5.75" in images.ask_receipt_total(client, url)


def test_models_say_which_read_images_by_ocr(client: openai.OpenAI) -> None:
    listed = {m.id: m.model_extra or {} for m in client.models.list()}
    assert listed[LOCAL_MODEL]["image_via_ocr"] is True
    assert listed["kimi-k2.5"]["image_via_ocr"] is False


def test_eight_images_accepted_nine_refused(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    url = images.data_url(images.encoded(images.chart(), "WEBP"), "image/png")  # declared type is wrong
    parts = [{"type": "text", "text": "Compare these."}] + [images.image_part(url)] * 8
    assert _chat(upstream_gateway, parts, "kimi-k2.5").status_code == 200
    sent = fakes["moon"].requests[-1].body["messages"][0]["content"]
    forwarded = [p["image_url"]["url"] for p in sent if p["type"] == "image_url"]
    assert len(forwarded) == 8 and all(images.decoded(u).size == (560, 360) for u in forwarded)

    refused = _chat(upstream_gateway, [*parts, images.image_part(url)], "kimi-k2.5")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "too_many_images" and "at most 8" in refused.text


def test_large_jpeg_is_downscaled_to_the_model_cap(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    big = images.encoded(images.receipt().resize((4000, 3000)), "JPEG", quality=85)
    response = _chat(
        upstream_gateway, [images.image_part(images.data_url(big, "image/jpeg"))], "kimi-vl-a3b-thinking"
    )
    assert response.status_code == 200, response.text
    served = next(f for f in fakes.values() if f.requests)
    part = served.requests[-1].body["messages"][0]["content"][0]
    width, height = images.decoded(part["image_url"]["url"]).size
    assert 0.9 * 1792 * 1792 <= width * height <= 1792 * 1792
    assert abs(width / height - 4 / 3) < 0.01


def test_exif_orientation_is_applied(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    raw = images.encoded(Image.new("RGB", (400, 200), "white"), "JPEG", exif=exif.tobytes())
    assert _chat(upstream_gateway, [images.image_part(images.data_url(raw))], "kimi-k2.5").status_code == 200
    part = fakes["moon"].requests[-1].body["messages"][0]["content"][0]
    assert images.decoded(part["image_url"]["url"]).size == (200, 400)


def test_bomb_corrupt_and_non_images_refused(gateway: GatewayProcess) -> None:
    bomb = _chat(gateway, [{"type": "text", "text": "hi"}, images.image_part(images.data_url(images.bomb()))])
    assert bomb.status_code == 400 and "decompression bomb" in bomb.json()["error"]["message"]
    assert bomb.json()["error"]["param"] == "messages[0].content[1]"

    whole = images.encoded(images.receipt(), "JPEG")
    truncated = _chat(
        gateway, [{"type": "text", "text": "hi"}, images.image_part(images.data_url(whole[:1500]))]
    )
    assert truncated.status_code == 400
    assert truncated.json()["error"]["message"].startswith("messages[0].content[1]: ")

    text = _chat(gateway, [images.image_part(images.data_url(b"GIF89a? not really"))])
    assert text.status_code == 400 and text.json()["error"]["code"] == "invalid_image"
    bmp = _chat(gateway, [images.image_part(images.data_url(images.encoded(images.receipt(), "BMP")))])
    assert bmp.status_code == 400 and "BMP images are not accepted" in bmp.text
    bad64 = _chat(gateway, [images.image_part("data:image/png;base64,@@@not base64@@@")])
    assert bad64.status_code == 400 and "not valid base64" in bad64.text


SSRF = [
    "http://127.0.0.1/a.png",
    "http://localhost/a.png",
    "http://0.0.0.0/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.5.4/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/a.png",
    "http://[::1]/a.png",
    "http://[fe80::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[fd00:ec2::254]/a.png",
    "http://2130706433/a.png",
    "http://0x7f000001/a.png",
    "http://0177.0.0.1/a.png",
    "http://127.1/a.png",
    "http://224.0.0.1/a.png",
    "file:///etc/passwd",
    "ftp://example.com/a.png",
    "gopher://example.com/a.png",
]


@pytest.mark.parametrize("url", SSRF)
def test_ssrf_forms_are_refused(gateway: GatewayProcess, url: str) -> None:
    response = _chat(gateway, [{"type": "text", "text": "hi"}, images.image_part(url)])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_image_url" and error["param"] == "messages[0].content[1]"
    assert "127.0.0.1" not in error["message"].split("cannot fetch this URL")[1]  # no resolved address echoed


class _ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _handler(receipt: bytes, port_box: list[int]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            if self.path == "/receipt.png":
                self._send(receipt)
            elif self.path == "/hop":
                self._redirect("/receipt.png")
            elif self.path == "/to-loopback":
                self._redirect(f"http://localhost:{port_box[0]}/receipt.png")
            elif self.path == "/to-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif self.path == "/loop":
                self._redirect("/loop")
            elif self.path == "/big":
                self._send(b"\x89PNG" + b"\0" * 400_000)
            elif self.path == "/big-chunked":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()  # no length: the cap must act while streaming
                for _ in range(100):
                    self.wfile.write(b"\0" * 10_000)
            elif self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"\0" * 1000)
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.send_error(404)

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    port_box: list[int] = []
    server = _ImageServer(("127.0.0.1", 0), _handler(images.encoded(images.receipt()), port_box))
    port_box.append(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def trusting_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """127.0.0.1 allow-listed (as a trusted internal image host), small caps, prompts logged."""
    config = (
        "[server]\nlog_prompts = true\n"
        '[media]\nallow_hosts = ["127.0.0.1"]\nfetch_total_seconds = 1.5\nmax_fetch_bytes = 200000\n'
        "video_max_pixels = 50000\n"
    )
    gw = GatewayProcess(tmp_path_factory.mktemp("trusting"), config)
    yield gw
    gw.stop()


def test_an_allowed_host_with_a_port_is_fetched(start_gateway: Any, image_server: str) -> None:
    """`allow_hosts = ["127.0.0.1:PORT"]` passed the URL check and was refused when connecting."""
    authority = image_server.removeprefix("http://")
    gw: GatewayProcess = start_gateway(f'[media]\nallow_hosts = ["{authority}"]\n')
    ask = {"type": "text", "text": ASK}
    fetched = _chat(gw, [ask, images.image_part(image_server + "/receipt.png")])
    assert fetched.status_code == 200, fetched.text
    other_port = "http://127.0.0.1:9/receipt.png"  # the same host on another port is not allowed
    refused = _chat(gw, [ask, images.image_part(other_port)])
    assert refused.status_code == 400 and "public" in refused.text, refused.text


def test_fetch_follows_checked_redirects_and_caps_downloads(
    trusting_gateway: GatewayProcess, image_server: str
) -> None:
    gw = trusting_gateway
    ask = {"type": "text", "text": ASK}
    assert _chat(gw, [ask, images.image_part(image_server + "/receipt.png")]).status_code == 200
    assert _chat(gw, [ask, images.image_part(image_server + "/hop")]).status_code == 200
    for path, why in [
        ("/to-loopback", "must be a public"),  # "localhost" is not on the allow-list
        ("/to-metadata", "must be a public"),
        ("/loop", "more than 3 redirects"),
        ("/big", "larger than"),
        ("/big-chunked", "larger than"),
        ("/slow", "longer than 1.5 s"),
        ("/missing", "HTTP 404"),
    ]:
        started = time.monotonic()
        response = _chat(gw, [ask, images.image_part(image_server + path)])
        assert response.status_code == 400 and why in response.json()["error"]["message"], (
            path,
            response.text,
        )
        assert time.monotonic() - started < 5


def test_media_bytes_never_reach_the_logs(trusting_gateway: GatewayProcess, image_server: str) -> None:
    raw = images.encoded(images.form())
    url = images.data_url(raw)
    assert (
        _chat(trusting_gateway, [{"type": "text", "text": "Read it."}, images.image_part(url)]).status_code
        == 200
    )
    log = Path(trusting_gateway.log_path).read_text()
    assert '"msg":"prompt"' in log  # prompts are logged here...
    assert url[22:80] not in log and "base64," not in log  # ...but not the image


def test_video_frames_reach_an_image_model_in_order(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    clip = images.video(["red", "lime", "blue"])
    part = {
        "type": "video_url",
        "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(clip).decode()},
    }
    response = _chat(
        upstream_gateway, [{"type": "text", "text": "What happens?"}, part], "kimi-vl-a3b-thinking"
    )
    assert response.status_code == 200, response.text
    served = next(f for f in fakes.values() if f.requests)
    sent = served.requests[-1].body["messages"][0]["content"]
    assert sent[0]["text"] == "What happens?" and "3 frames in order" in sent[1]["text"]
    colors = [images.mean_color(images.decoded(p["image_url"]["url"])) for p in sent[2:]]
    assert [max(range(3), key=c.__getitem__) for c in colors] == [0, 1, 2]  # red, then green, then blue


def test_video_goes_whole_to_a_video_model(
    upstream_gateway: GatewayProcess, fakes: dict[str, FakeUpstream]
) -> None:
    clip = images.video(["red", "blue"])
    part = {"type": "video_url", "video_url": "data:video/mp4;base64," + base64.b64encode(clip).decode()}
    assert _chat(upstream_gateway, [part], "kimi-k2.5").status_code == 200
    sent = fakes["moon"].requests[-1].body["messages"][0]["content"][0]
    assert sent["type"] == "video_url" and base64.b64decode(sent["video_url"]["url"].split(",")[1]) == clip


def test_video_limits_and_corrupt_video(gateway: GatewayProcess) -> None:
    long_clip = images.video(["red"] * 130, fps=1, size=(32, 32))  # 130 s, over the 120 s cap
    url = "data:video/mp4;base64," + base64.b64encode(long_clip).decode()
    too_long = _chat(gateway, [{"type": "video_url", "video_url": {"url": url}}])
    assert too_long.status_code == 400 and "at most 120 s" in too_long.json()["error"]["message"]
    junk = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42 not a video").decode()
    broken = _chat(gateway, [{"type": "video_url", "video_url": {"url": junk}}])
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_video"
    assert broken.json()["error"]["param"] == "messages[0].content[0]"


def test_local_model_reads_text_in_video_frames(trusting_gateway: GatewayProcess) -> None:
    import av
    from PIL import ImageDraw

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 320, 120, "yuv420p"
        for word in ("HELLO", "WORLD"):
            still = images.Image.new("RGB", (320, 120), "white")
            ImageDraw.Draw(still).text((20, 30), word, fill="black", font=images._font(48))
            for packet in stream.encode(av.VideoFrame.from_image(still)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    url = "data:video/mp4;base64," + base64.b64encode(out.getvalue()).decode()
    response = _chat(trusting_gateway, [{"type": "video_url", "video_url": {"url": url}}])
    assert response.status_code == 200, response.text
    # The prompt log (on here) shows what the text-only model was given: OCR of each frame, in order.
    prompt = next(
        r
        for r in trusting_gateway.log_records()
        if r.get("msg") == "prompt" and r.get("request_id") == response.headers["x-request-id"]
    )
    given = json.dumps(prompt["messages"])
    assert "2 frames in order" in given and given.index("HELLO") < given.index("WORLD")


@pytest.fixture(scope="module")
def forwarding_gateway(
    fake_servers: dict[str, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """Fake providers behind a gateway that trusts 127.0.0.1 as an image host; K2.5 also on OpenRouter."""
    config = (
        '[media]\nallow_hosts = ["127.0.0.1"]\n'
        + gateway_config(fake_servers)
        + '[providers.orouter.models."kimi-k2.5"]\nupstream = "moonshotai/kimi-k2.5"\n'
    )
    gw = GatewayProcess(tmp_path_factory.mktemp("forwarding"), config, env={KEY_ENV: KEY})
    yield gw
    gw.stop()


def test_fetched_images_go_as_urls_to_providers_that_fetch(
    forwarding_gateway: GatewayProcess, fakes: dict[str, FakeUpstream], image_server: str
) -> None:
    url = image_server + "/receipt.png"
    inline = images.data_url(images.encoded(images.form()))
    for provider, expect_url in (("orouter", True), ("moon", False)):
        body = {
            "model": "kimi-k2.5",
            "provider": {"only": [provider]},
            "messages": [{"role": "user", "content": [images.image_part(url), images.image_part(inline)]}],
        }
        response = httpx.post(forwarding_gateway.api + "/chat/completions", json=body, timeout=30)
        assert response.status_code == 200, response.text
        fetched, given = (
            p["image_url"]["url"] for p in fakes[provider].requests[-1].body["messages"][0]["content"]
        )
        # OpenRouter fetches URLs itself: it gets the (checked) URL; Moonshot takes base64 only.
        assert (fetched == url) is expect_url
        if not expect_url:
            assert images.decoded(fetched).size == (480, 320)
        assert given.startswith("data:image/")  # an image sent inline stays inline everywhere


def test_video_resolution_and_download_caps(trusting_gateway: GatewayProcess, image_server: str) -> None:
    wide = images.video(["red"], size=(320, 240))  # 76,800 pixels a frame, over this gateway's 50,000
    url = "data:video/mp4;base64," + base64.b64encode(wide).decode()
    too_big = _chat(trusting_gateway, [{"type": "video_url", "video_url": {"url": url}}])
    assert (
        too_big.status_code == 400 and "at most 50,000 pixels a frame" in too_big.json()["error"]["message"]
    )
    oversized = _chat(trusting_gateway, [{"type": "video_url", "video_url": {"url": image_server + "/big"}}])
    assert oversized.status_code == 400 and "larger than" in oversized.json()["error"]["message"]


def test_a_stream_description_is_not_opened_as_a_video(trusting_gateway: GatewayProcess) -> None:
    """An SDP description probed as a video made FFmpeg open RTP/UDP sockets and block ~20 s a part; only
    file containers are demuxed, named from their magic numbers."""
    sdp = (
        b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
        b"m=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    )
    url = "data:video/mp4;base64," + base64.b64encode(sdp).decode()
    started = time.monotonic()
    refused = _chat(trusting_gateway, [{"type": "video_url", "video_url": {"url": url}}] * 2)
    assert refused.status_code == 400, refused.text
    assert "not a video container that is accepted" in refused.json()["error"]["message"]
    assert time.monotonic() - started < 5  # it took ~20 s a part


def test_video_frames_count_against_the_image_cap(start_gateway: Any) -> None:
    """Four 2-second videos to a model that takes 4 images: one frame each (they were 8 frames each, 32
    decoded and OCR'd); five videos: refused before any is decoded."""
    gw: GatewayProcess = start_gateway("[server]\nlog_prompts = true\n[media]\nmax_images = 4\n")
    clip = images.video(["red", "blue"])
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    part = {"type": "video_url", "video_url": {"url": url}}
    refused = _chat(gw, [part] * 5)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_many_images", refused.text
    served = _chat(gw, [part] * 4)
    assert served.status_code == 200, served.text
    prompt = next(
        r
        for r in gw.log_records()
        if r.get("msg") == "prompt" and r.get("request_id") == served.headers["x-request-id"]
    )
    given = json.dumps(prompt["messages"])
    assert given.count("1 frames in order") == 4, given[:500]
