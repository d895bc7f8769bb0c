"""The pages in a real browser: Debian's Chromium driven by Playwright, against a real gateway process
with the embedded model and a fake Moonshot upstream.

Each test writes screenshots of the pages it drove to tests/artifacts/ (the README shows copies), and the
page-weight test writes what each page transferred and when it became usable to tests/artifacts/pages.json.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess, free_port
from tests import images
from tests.billing import K25, Operator, config, start
from tests.fakes.upstream import Answer, FakeUpstream
from tests.fakes.web import Researcher, Swarmer, WebSite
from tests.services import require

ARTIFACTS = Path(os.environ.get("KIMI_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))
APP = {"HTTP-Referer": "https://receipts.example/", "X-Title": "Receipt Reader"}
PAGES = ("/models", f"/models/{K25}", "/chat", "/console")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    require("Chromium", "install Debian's chromium package (`apt-get install chromium`; .ci/run does)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require("Playwright", "pip install playwright (a test extra)")
    with sync_playwright() as playwright:
        # Root in a container has no user namespaces for Chromium's sandbox.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Origin:
    """Another web origin on loopback (a different port): a page there calls the gateway across origins."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text("<!doctype html><title>other origin</title><p>another app</p>")
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Origin, Origin]]:
    allowed, refused = Origin(tmp_path_factory.mktemp("allowed")), Origin(tmp_path_factory.mktemp("refused"))
    yield allowed, refused
    allowed.stop()
    refused.stop()


class Site:
    web: WebSite  # the search backend and pages the playground's web search reaches

    def __init__(self, gw: GatewayProcess, moon: FakeUpstream) -> None:
        self.gw = gw
        self.moon = moon
        self.operator = Operator(gw)
        self.key = self.operator.key_for("web")
        self.operator.recharge("web", "10")


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    fake_servers: dict[str, FakeUpstream],
    origins: tuple[Origin, Origin],
) -> Iterator[Site]:
    moon = fake_servers["moon"]
    web = WebSite()
    extra = (
        f'[server]\ncors_origins = ["{origins[0].url}"]\n'
        f'[tools.web_search]\nbackend = "searxng"\nbase_url = "{web.base_url}"\n'
    )
    gw = start(tmp_path_factory.mktemp("web"), config(moon, extra=extra))
    site = Site(gw, moon)
    site.web = web
    yield site
    gw.stop()
    web.stop()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    # Script errors and policy violations: a page should have none. (A refused API call, such as the 401
    # before a key is pasted, is the page's to show, not a problem.)
    opened.problems = []
    opened.on(
        "console",
        lambda m: (
            opened.problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    opened.on("pageerror", lambda e: opened.problems.append(str(e)))
    yield opened
    context.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _until(page: Any, expression: str, timeout: float = 30.0) -> Any:
    """Poll an expression from outside the page. (Playwright's wait_for_function compiles its argument
    inside the page, which the pages' policy refuses, as it should: no eval.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {expression}")
        time.sleep(0.05)


def _use_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-save")


def _open(page: Any, site: Site, path: str, key: str | None = None) -> None:
    page.goto(site.gw.base_url + path)
    if key is not None:
        _use_key(page, key)


# ---- plain HTTP: the headers and the switch --------------------------------------------------------------


def test_pages_carry_a_strict_policy(site: Site) -> None:
    for path in PAGES:
        got = httpx.get(site.gw.base_url + path)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/html")
        policy = got.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "<script>" not in got.text  # every script is a file: no inline code for the policy to allow
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(site.gw.base_url + "/static/web/chat.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(site.gw.base_url + "/").headers["location"].endswith("/models")
    # The shells are public; the data behind them is not.
    assert httpx.get(site.gw.base_url + "/api/v1/models/kimi-k2.5/stats").status_code == 401


def test_web_can_be_turned_off(start_gateway: Any) -> None:
    gw = start_gateway("[server]\nweb = false\n")
    for path in PAGES:
        got = httpx.get(gw.base_url + path)
        assert got.status_code == 404 and got.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(gw.base_url + "/static/web/chat.js").status_code == 404
    assert httpx.get(gw.api + "/models").status_code == 200  # the API is unchanged


# ---- the playground --------------------------------------------------------------------------------------


def _drop_file(page: Any, selector: str, raw: bytes, name: str, mime: str) -> None:
    transfer = page.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            return transfer;
        }""",
        [base64.b64encode(raw).decode(), name, mime],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _watch_answer(page: Any, timeout: float = 180.0) -> list[str]:
    """The answer's text as it grows, until its statistics line appears (the stream's end)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = page.inner_text(".answer .content") if page.query_selector(".answer .content") else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        error = page.query_selector(".answer .error")
        if error is not None and error.inner_text().strip():
            raise AssertionError(f"the answer failed: {error.inner_text()}")
        if page.query_selector(".answer .stats") and page.inner_text(".answer .stats").strip():
            final = page.inner_text(".answer .content")
            if not seen or seen[-1] != final:
                seen.append(final)
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no answer within {timeout}s; saw {seen!r}")


def test_playground_reads_a_dropped_receipt_with_the_embedded_model(site: Site, page: Any) -> None:
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", LOCAL_MODEL)
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "40")
    _drop_file(page, "#composer", images.encoded(images.receipt()), "receipt.png", "image/png")
    page.wait_for_selector("#attachments img")  # the thumbnail
    page.fill("#composer-text", "What is the TOTAL on this receipt?")
    page.click("#send")
    seen = _watch_answer(page)
    assert "5.75" in seen[-1]
    assert len(seen) >= 2, f"the answer arrived in one piece, not streamed: {seen!r}"
    stats = page.inner_text(".answer .stats")
    assert "prompt" in stats and "completion" in stats and "TTFT" in stats and "tok/s" in stats
    assert page.query_selector(".msg.user .thumbs img") is not None
    _shot(page, "chat")
    # The conversation is kept in the browser, and the exact request can be taken away.
    stored = page.evaluate("JSON.parse(localStorage.getItem('kimi-gateway.conversations'))")
    assert stored[0]["turns"][1]["answers"][0]["content"] == seen[-1]
    request = stored[0]["turns"][1]["answers"][0]["request"]
    assert request["model"] == LOCAL_MODEL and request["messages"][-1]["content"][0]["type"] == "image_url"
    assert not page.problems, page.problems


def test_playground_attaches_a_document_and_a_video(site: Site, page: Any) -> None:
    """A text file goes through the files API (its text reaches the model); a video goes as frames to a
    model that takes video."""
    site.moon.script(Answer(content="Seen."))
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.set_input_files(
        "#file-input",
        files=[
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"The secret word is PINEAPPLE."},
            {"name": "clip.mp4", "mimeType": "video/mp4", "buffer": images.video(["red", "blue"])},
        ],
    )
    page.wait_for_selector("#attachments .attachment[data-kind=video]")
    assert page.query_selector("#attachments .attachment[data-kind=file]") is not None
    page.fill("#composer-text", "What is the secret word, and what colours does the clip show?")
    page.click("#send")
    _watch_answer(page)
    sent = json.dumps(site.moon.requests[-1].body)
    assert "PINEAPPLE" in sent  # the extracted text, given to the model
    assert '"video_url"' in sent or sent.count('"image_url"') >= 2  # the clip, as video or as frames
    uploaded = httpx.get(site.gw.api + "/files", headers={"Authorization": f"Bearer {site.key}"}).json()
    assert "notes.txt" in [f["filename"] for f in uploaded["data"]]
    assert not page.problems, page.problems


def test_stop_regenerate_and_export(site: Site, page: Any) -> None:
    """Stop ends the stream (the gateway records the generation as cancelled); regenerate asks again;
    the conversations download as JSON."""
    slow = Answer(content=" ".join(f"word{i}" for i in range(200)), chunk_delay=0.05)
    site.moon.script(slow, Answer(content="A second answer."))
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.fill("#composer-text", "Count.")
    page.click("#send")
    _until(page, "(document.querySelector('.answer .content') || {}).textContent?.includes('word3')")
    page.click("#stop")
    _until(page, "document.querySelector('.answer .error').textContent === 'Stopped.'")
    assert "word199" not in page.inner_text(".answer .content")
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    key = {"Authorization": f"Bearer {site.key}"}
    deadline, statuses = time.monotonic() + 10, []
    while "cancelled" not in statuses and time.monotonic() < deadline:
        time.sleep(0.1)  # records are written in batches
        log = httpx.get(site.gw.base_url + "/api/v1/generations", headers=key).json()["data"]
        statuses = [g["status"] for g in log]
    assert "cancelled" in statuses, "the gateway did not record the stopped generation as cancelled"
    page.click(".answer button.regenerate")
    _watch_answer(page)
    assert page.inner_text(".answer .content") == "A second answer."
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported[0]["turns"][1]["answers"][0]["content"] == "A second answer."


def test_untrusted_model_output_runs_and_loads_nothing(site: Site, page: Any) -> None:
    hostile = (
        "Look: <img src=x onerror=alert(1)> and <script>alert(2)</script>\n\n"
        "[click me](javascript:alert(3))\n\n![tracker](https://tracker.example/p.png)\n\n"
        "```html\n<b>code stays code</b>\n```\n\n**bold** is fine."
    )
    site.moon.script(Answer(content=hostile, reasoning="Thinking about <b>it</b>.", chunk_delay=0.01))
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.fill("#composer-text", "Say something dangerous.")
    page.click("#send")
    _watch_answer(page)
    content = page.query_selector(".answer .content")
    text = content.inner_text()
    assert "<img src=x onerror=alert(1)>" in text and "<script>alert(2)</script>" in text  # shown as text
    assert content.query_selector("img, script, svg, iframe") is None
    assert page.query_selector("a[href^='javascript']") is None
    assert "click me" in text
    assert content.query_selector("a[href='https://tracker.example/p.png']") is not None  # a link, not a load
    assert content.query_selector("strong").inner_text() == "bold"
    assert "<b>code stays code</b>" in content.query_selector("pre code").inner_text()
    page.click(".answer details.reasoning summary")
    assert "Thinking about <b>it</b>." in page.inner_text(".answer details.reasoning")
    assert not [url for url in requested if "tracker.example" in url or url.endswith("/x")]
    # Clicking what was the javascript: link runs nothing either.
    page.get_by_text("click me").click()
    page.wait_for_timeout(200)
    assert dialogs == []
    _shot(page, "chat-untrusted")


def test_compare_two_models_and_copy_the_request(site: Site, page: Any) -> None:
    site.moon.script(
        Answer(content="Answer A", prompt_tokens=30), Answer(content="Answer B", prompt_tokens=30)
    )
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.check("#compare")
    page.select_option("#model-1", LOCAL_MODEL)
    page.fill("#max-tokens", "8")
    page.fill("#composer-text", "Hello")
    page.click("#send")
    _until(
        page,
        "document.querySelectorAll('.answer .stats').length === 2 && "
        "[...document.querySelectorAll('.answer .stats')].every(s => s.textContent.trim())",
        timeout=120,
    )
    answers = page.query_selector_all(".answers.two .answer")
    assert [a.get_attribute("data-model") for a in answers] == [K25, LOCAL_MODEL]
    assert (
        "Moonshot AI" in answers[0].inner_text() and "$" in answers[0].query_selector(".stats").inner_text()
    )
    # Copy as Python: the exact request, as code that runs with the SDK.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answers[0].query_selector("button:has-text('Copy as Python')").click()
    code = page.evaluate("navigator.clipboard.readText()")
    assert f'model="{K25}"' in code and "max_tokens=8" in code and "stream=True" in code
    compile(code, "copied.py", "exec")
    _shot(page, "chat-compare")
    # Edit and resend: the turn comes back to the composer and the conversation is cut there.
    page.click(".msg.user button.edit")
    assert page.input_value("#composer-text") == "Hello"
    assert page.query_selector(".answer") is None


def test_playground_draws_a_swarm_run(site: Site, page: Any) -> None:
    """The Swarm toggle makes the request a swarm run; the tree of agents is drawn as the run goes, and
    ends with each agent's status."""
    site.web.reset()
    site.moon.reset()
    # Three agents that all succeed: a provider failure here would count against the model page's uptime.
    site.moon.agent = Swarmer(tasks=("alpha", "beta", "delta"), delay=0.6)
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.check("#swarm")
    page.fill("#composer-text", "Compare alpha, beta and gamma.")
    page.click("#send")
    # While the agents work, the tree shows them running.
    page.wait_for_selector(".answer ul.agents li.agent[data-status=running]", timeout=15000)
    final = _watch_answer(page)[-1]
    assert final == "Swarm summary. alpha: completed; beta: completed; delta: completed"
    page.wait_for_selector(".answer ul.agents[data-status=completed]", timeout=15000)
    rows = page.eval_on_selector_all(
        ".answer ul.agents li.agent", "els => els.map(e => [e.dataset.name, e.dataset.status])"
    )
    assert rows == [
        ["orchestrator", "completed"],
        ["alpha", "completed"],
        ["beta", "completed"],
        ["delta", "completed"],
    ]
    assert "Running sub-agents — 3 agent(s)" in page.inner_text(".answer ul.tools li.tool[data-type=agents]")
    request = page.evaluate("JSON.parse(localStorage.getItem('kimi-gateway.conversations'))")
    assert request[0]["turns"][-1]["answers"][0]["request"]["agent"] == {"mode": "swarm"}
    _shot(page, "chat-swarm")
    assert not page.problems, page.problems
    site.moon.agent = None


def test_playground_web_search_shows_the_search_and_its_sources(site: Site, page: Any) -> None:
    site.web.reset()
    site.moon.reset()
    site.moon.agent = Researcher(fetch=False)
    _open(page, site, "/chat", site.key)
    page.wait_for_selector("#main[data-ready=true]")
    page.select_option("#model-0", K25)
    page.check("#web-search")
    page.fill("#composer-text", "What is Kimi K2.5?")
    page.click("#send")
    final = _watch_answer(page)[-1]
    url = site.web.page("/kimi-k25")
    assert url in final
    # The search as it ran: what was asked, and what came back, linked.
    tool = page.inner_text(".answer ul.tools li.tool[data-status=done]")
    assert "Searching the web: What is Kimi K2.5?" in tool and "2 result(s)" in tool
    links = page.eval_on_selector_all(".answer ul.tools a", "els => els.map(e => e.href)")
    assert url in links
    # The answer's sources, clickable.
    sources = page.eval_on_selector_all(".answer .sources a", "els => els.map(e => e.href)")
    assert sources and sources[0] == url
    assert page.get_attribute(".answer .sources a", "rel") == "noopener noreferrer"
    request = page.evaluate("JSON.parse(localStorage.getItem('kimi-gateway.conversations'))")
    assert request[0]["turns"][-1]["answers"][0]["request"]["plugins"] == [{"id": "web"}]
    assert [s["query"] for s in site.web.searches] == ["What is Kimi K2.5?"]
    _shot(page, "chat-web-search")
    assert not page.problems, page.problems
    site.moon.agent = None


# ---- model pages -----------------------------------------------------------------------------------------


def test_model_page_shows_providers_apps_activity_and_uptime(site: Site, page: Any) -> None:
    site.moon.script(*[Answer(prompt_tokens=200, completion_tokens=40, cached_tokens=50)] * 3)
    client = openai.OpenAI(base_url=site.gw.api, api_key=site.key, max_retries=0, default_headers=APP)
    for _ in range(3):
        client.chat.completions.create(model=K25, messages=[{"role": "user", "content": "Hi"}])
    time.sleep(1.5)  # the records' batch and the uptime buckets are written about once a second
    _open(page, site, f"/models/{K25}", site.key)
    page.wait_for_selector("#main[data-loaded=true]")
    assert page.inner_text("#model-id") == K25
    row = page.query_selector("#providers tr[data-provider=moon]")
    assert row is not None and "Moonshot AI" in row.inner_text() and "100%" in row.inner_text()
    # Presets that could serve the model but have no key here are listed, with the variable to set.
    assert "TOGETHER_API_KEY" in page.inner_text("#providers")
    assert "Receipt Reader" in page.inner_text("#apps")
    assert not page.inner_text("#activity-total").startswith("0 ")
    assert page.query_selector("#recent-activity rect[data-series=prompt_tokens]") is not None
    assert page.query_selector("#uptime [data-provider=moon] rect[data-uptime='100']") is not None
    assert 'base_url="' + site.gw.api in page.inner_text("#sample-python")
    _shot(page, "model")

    # The list: search and filters.
    _open(page, site, "/models")
    page.wait_for_selector("#model-list .card")
    everything = len(page.query_selector_all("#model-list .card"))
    page.fill("#search", "k2.5")
    shown = page.query_selector_all("#model-list .card")
    assert 1 <= len(shown) < everything and all("k2.5" in c.inner_text().lower() for c in shown)
    page.fill("#search", "")
    page.select_option("#modality", "image")
    with_images = [c.get_attribute("data-model") for c in page.query_selector_all("#model-list .card")]
    assert "kimi-vl-a3b-thinking" in with_images and len(with_images) < everything
    page.select_option("#modality", "")
    page.check("#available")
    available = [c.get_attribute("data-model") for c in page.query_selector_all("#model-list .card")]
    assert set(available) >= {K25, LOCAL_MODEL} and "kimi-vl-a3b-thinking" not in available
    page.uncheck("#available")
    _shot(page, "models")
    assert not page.problems, page.problems


def test_pages_ask_for_a_key_when_keys_exist(site: Site, page: Any) -> None:
    _open(page, site, f"/models/{K25}")
    page.wait_for_selector("#notice.error")
    assert "API key" in page.inner_text("#notice")
    _use_key(page, site.key)  # pasting the key loads the page's data without a reload
    page.wait_for_selector("#main[data-loaded=true]")
    assert page.evaluate("document.cookie") == ""
    assert site.key not in page.url
    assert page.evaluate("sessionStorage.getItem('kimi-gateway.key')") == site.key


# ---- the console -----------------------------------------------------------------------------------------


def _balance(page: Any) -> float:
    return float(page.inner_text("#balance").lstrip("$"))


def test_console_shows_the_balance_fall_and_a_management_key_makes_keys(site: Site, page: Any) -> None:
    _open(page, site, "/console", site.key)
    page.wait_for_selector("#main[data-loaded]")
    before = _balance(page)
    assert page.query_selector("#keys") is None  # an inference key sees no key management
    site.moon.script(Answer(prompt_tokens=1000, completion_tokens=500))
    client = openai.OpenAI(base_url=site.gw.api, api_key=site.key, max_retries=0, default_headers=APP)
    reply = client.chat.completions.create(model=K25, messages=[{"role": "user", "content": "Hi"}])
    deadline = time.monotonic() + 15
    while _balance(page) >= before and time.monotonic() < deadline:
        loaded = page.get_attribute("#main", "data-loaded")
        page.click("#refresh")
        _until(page, f"document.getElementById('main').dataset.loaded !== '{loaded}'")
    assert _balance(page) < before
    assert page.query_selector(f"#generations tr[data-id='{reply.id}']") is not None
    assert "Receipt Reader" in page.inner_text("#generations")
    assert "/" in page.inner_text("#rpm")
    _shot(page, "console")

    _use_key(page, site.operator.key)
    page.wait_for_selector("#keys")
    page.fill("#new-key-name", "made in the console")
    page.click("#create-key")
    page.wait_for_selector("#new-key")
    made = page.inner_text("#new-key")
    assert made.startswith("sk-kg-")
    check = httpx.get(site.gw.base_url + "/api/v1/key", headers={"Authorization": f"Bearer {made}"})
    assert check.status_code == 200 and check.json()["data"]["name"] == "made in the console"
    row = page.locator("#key-list tr", has_text="made in the console")
    row.locator("button.disable").click()
    page.locator("#key-list tr", has_text="made in the console").get_by_text("disabled").wait_for()
    # Recharge another account from the console.
    before_credits = httpx.get(
        site.gw.base_url + "/api/v1/credits", headers={"Authorization": f"Bearer {site.key}"}
    ).json()["data"]["total_credits"]
    page.fill("#credit-amount", "2.5")
    page.fill("#credit-account", "web")
    page.click("#add-credits")
    page.locator("#notice", has_text="Added $2.50 to web").wait_for()
    after_credits = httpx.get(
        site.gw.base_url + "/api/v1/credits", headers={"Authorization": f"Bearer {site.key}"}
    ).json()["data"]["total_credits"]
    assert after_credits == pytest.approx(before_credits + 2.5)
    _shot(page, "console-keys")
    # The plaintext was shown once: a reload shows the list without it.
    page.reload()
    page.wait_for_selector("#key-list")
    assert made not in page.content()


# ---- CORS, as a browser enforces it --------------------------------------------------------------------


def test_cors_lets_the_configured_origin_call_the_api_and_no_other(
    site: Site, page: Any, origins: tuple[Origin, Origin]
) -> None:
    allowed, refused = origins
    call = """async ([url, key]) => {
        try {
            const r = await fetch(url, { headers: { Authorization: "Bearer " + key, "X-Title": "cors" } });
            return { status: r.status, limit: r.headers.get("x-request-id") !== null };
        } catch (e) { return { error: String(e) }; }
    }"""
    page.goto(allowed.url + "/index.html")
    result = page.evaluate(call, [site.gw.api + "/models", site.key])
    assert result == {"status": 200, "limit": True}
    page.goto(refused.url + "/index.html")
    result = page.evaluate(call, [site.gw.api + "/models", site.key])
    assert "error" in result  # the browser refused to hand the answer to the page


# ---- weight and time ------------------------------------------------------------------------------------


def test_page_weights(site: Site, browser: Any) -> None:
    """Each page's transferred bytes (cold cache) and the time until its data is on screen, written to the
    artifacts."""
    ready = {
        "/models": "#model-list .card",
        "/chat": "#main[data-ready=true]",
        "/console": "#main[data-loaded]",
    }
    report = {}
    for path in PAGES:
        context = browser.new_context()  # a fresh cache for each page
        page = context.new_page()
        # The key goes into this tab's sessionStorage from a same-origin URL that loads no assets.
        page.goto(site.gw.base_url + "/health")
        page.evaluate("key => sessionStorage.setItem('kimi-gateway.key', key)", site.key)
        page.goto(site.gw.base_url + path)
        page.wait_for_selector(ready.get(path, "#main[data-loaded=true]"))
        usable_ms = page.evaluate("performance.now()")
        entries = page.evaluate(
            """() => [
                performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')
            ].map(e => ({
                name: e.name, bytes: e.transferSize, body: e.decodedBodySize, type: e.initiatorType
            }))"""
        )
        context.close()
        assets = [e for e in entries if "/static/" in e["name"] or e["type"] == "navigation"]
        report[path] = {
            "page_and_assets_transferred_bytes": sum(e["bytes"] for e in assets),
            "page_and_assets_decoded_bytes": sum(e["body"] for e in assets),
            "api_calls_transferred_bytes": sum(e["bytes"] for e in entries if e not in assets),
            "requests": len(entries),
            "usable_ms": round(usable_ms),
        }
        # No page pulls anything from another origin.
        assert all(e["name"].startswith(site.gw.base_url) for e in entries), entries
        # Light: the largest (the playground, with its Markdown and sanitizer libraries) under 250 KB.
        assert report[path]["page_and_assets_decoded_bytes"] < 250_000, report[path]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "pages.json").write_text(json.dumps(report, indent=2))
