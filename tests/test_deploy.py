"""The gateway as operators run it: its container image (built offline, run with no network), the compose
stack (two replicas behind HAProxy, PostgreSQL, Redis) under load, killed and restarted, and the Kubernetes
manifests rendered and validated.

Containers run with rootful podman from Debian's packages. No registry is reachable here, so the images'
bases and the stack's PostgreSQL, Redis and HAProxy come from Debian's packages, made beforehand by
`deploy/prepare-offline.sh --test-services` (`.ci/run` runs it), and the image build reads only the
wheelhouse it made: nothing is fetched while the tests run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kimi_gateway.config import load_config
from kimi_gateway.selfhost import render_kubernetes
from kimi_gateway.testing import LOCAL_MODEL, free_port, wait_until
from tests import images
from tests.services import require

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/kimi-base:bookworm"
IMAGE = "localhost/kimi-gateway:test"
SERVICES = {name: f"localhost/kg-test-{name}" for name in ("postgres", "redis", "haproxy")}


def _podman_config(folder: Path) -> dict[str, str]:
    """The environment podman needs on this machine kind (deploy/prepare-offline.sh does the same)."""
    limit = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
    conf = folder / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={limit}:{limit}", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


@dataclass
class Podman:
    env: dict[str, str]

    def __call__(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    if shutil.which("podman") is None:
        require("podman", "not installed (apt-get install podman podman-compose runc mmdebstrap)")
    if os.geteuid() != 0:
        require("podman", "the container tests run rootful podman")
    run = Podman(_podman_config(tmp_path_factory.mktemp("podman")))
    missing = [i for i in (BASE, *SERVICES.values()) if run("image", "exists", i, check=False).returncode]
    if missing or not list((ROOT / "wheelhouse").glob("llama_cpp_python-*.whl")):
        require(
            "the offline images", f"run deploy/prepare-offline.sh --test-services first (missing: {missing})"
        )
    return run


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    """The image, built from this checkout with no network: the wheelhouse only."""
    started = time.monotonic()
    podman(
        "build",
        "--format",
        "docker",
        "--network",
        "none",
        "--build-arg",
        f"BASE={BASE}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "-t",
        IMAGE,
        str(ROOT),
        timeout=1200,
    )
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    print(f"image built in {time.monotonic() - started:.0f} s, {size / 1e6:.0f} MB")
    return IMAGE


def _chat_in(podman: Podman, container: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """A request made inside the container (it has no network to be reached through)."""
    script = (
        "import json, sys, urllib.request\n"
        "url = 'http://127.0.0.1:8000/v1/chat/completions'\n"
        "headers = {'Authorization': 'Bearer ' + sys.argv[1], 'Content-Type': 'application/json'}\n"
        "req = urllib.request.Request(url, data=sys.stdin.buffer.read(), headers=headers)\n"
        "print(urllib.request.urlopen(req, timeout=120).read().decode())\n"
    )
    done = subprocess.run(
        ["podman", "exec", "-i", container, "python3", "-c", script, key],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        env=podman.env,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


def test_the_image_serves_the_embedded_model_with_no_network(podman: Podman, image: str) -> None:
    volume = "kg-test-image-data"
    podman("volume", "rm", "-f", volume, check=False)
    container = "kg-test-image"
    podman("rm", "-f", container, check=False)
    try:
        made = podman(
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{volume}:/data",
            image,
            "keys",
            "create",
            "--name",
            "t",
        )
        key = made.stdout.splitlines()[0].strip()
        podman("run", "-d", "--name", container, "--network", "none", "-v", f"{volume}:/data", image)
        ready = wait_until(
            lambda: (
                podman(
                    "exec",
                    container,
                    "python3",
                    "-c",
                    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/ready').read().decode())",
                    check=False,
                ).stdout
            ),
            timeout=60,
        )
        assert json.loads(ready)["status"] == "ready"
        assert podman("healthcheck", "run", container, check=False).returncode == 0  # the image's HEALTHCHECK
        user = podman("exec", container, "id", "-u").stdout.strip()
        assert user != "0"  # not root
        reply = _chat_in(
            podman,
            container,
            key,
            {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16},
        )
        assert reply["choices"][0]["message"]["content"]
        # Images reach the text-only model as their OCR'd text: the receipt's words are in the prompt.
        receipt = images.data_url(images.encoded(images.receipt()))
        question = [{"type": "text", "text": "What is the total?"}, images.image_part(receipt)]
        seen = _chat_in(
            podman,
            container,
            key,
            {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 8},
        )
        plain = _chat_in(
            podman,
            container,
            key,
            {
                "model": LOCAL_MODEL,
                "messages": [{"role": "user", "content": "What is the total?"}],
                "max_tokens": 8,
            },
        )
        assert seen["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 10
        logs = podman("logs", container).stderr + podman("logs", container).stdout
        assert '"msg":"kimi-gateway' in logs and "Traceback" not in logs  # JSON lines: not a terminal
    finally:
        podman("rm", "-f", container, check=False)
        podman("volume", "rm", "-f", volume, check=False)


# ---- the compose stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    podman: Podman
    folder: Path
    project: str
    port: int
    key: str = ""  # a management key
    user: str = ""  # an inference key of an account with credit
    replicas: tuple[str, str] = ("gateway-a", "gateway-b")
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman-compose", "-p", self.project, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            env=self.podman.env,
            timeout=timeout,
        )
        self.log.append(f"$ podman-compose {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


PRICING = {LOCAL_MODEL: {"pricing": {"input": 1.0, "output": 2.0}}}  # so that charges are not all zero
TIERS = [{"tier": 0, "min_recharge": 0, "concurrency": 64, "rpm": 10000}]  # the load is not rate-limited


@pytest.fixture(scope="module")
def stack(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("podman-compose") is None:
        require("podman-compose", "not installed")
    folder = tmp_path_factory.mktemp("compose")
    (folder / "deploy").mkdir()
    shutil.copy(ROOT / "compose.yaml", folder / "compose.yaml")  # the file users run, as it is
    shutil.copy(ROOT / "deploy" / "haproxy.cfg", folder / "deploy" / "haproxy.cfg")
    port = free_port()
    env = (ROOT / "deploy" / "env.example").read_text().replace("change-me", "pw-" + os.urandom(6).hex())
    env = env.replace("LISTEN=127.0.0.1:8080", f"LISTEN=127.0.0.1:{port}")
    env += (
        f"GATEWAY_IMAGE={image}\nPOSTGRES_IMAGE={SERVICES['postgres']}\nREDIS_IMAGE={SERVICES['redis']}\n"
        f"HAPROXY_IMAGE={SERVICES['haproxy']}\nKIMI_GATEWAY_MODELS={json.dumps(PRICING)}\n"
        f"KIMI_GATEWAY_ACCOUNTS__TIERS={json.dumps(TIERS)}\n"
    )
    (folder / ".env").write_text(env)
    stack = Stack(podman, folder, f"kgtest{os.getpid()}", port)
    try:
        # The README's commands: a management key first (a replica refuses to listen on 0.0.0.0 without
        # keys), then the stack.
        made = None
        for _ in range(3):  # PostgreSQL's first start may not be done the first time
            made = stack.compose(
                "run", "--rm", "gateway-a", "keys", "create", "--name", "admin", "--kind", "management"
            )
            if made.returncode == 0 and made.stdout.strip():
                break
            time.sleep(3)
        assert made is not None and made.returncode == 0, "\n".join(stack.log)
        stack.key = next(line for line in made.stdout.splitlines() if line.startswith("sk-"))
        assert stack.compose("up", "-d").returncode == 0, "\n".join(stack.log)
        assert wait_until(lambda: _ready_through(stack), timeout=120), "\n".join(stack.log)
        stack.user = _account_key(stack, "stack", "5")
        assert wait_until(lambda: _both_up(stack), timeout=60), "\n".join(stack.log)
        yield stack
    finally:
        for service in ("gateway-a", "gateway-b", "lb"):
            stack.log.append(podman("logs", "--tail", "30", stack.container(service), check=False).stderr)
        stack.compose("down", "-v", timeout=180)


def _ready_through(stack: Stack) -> bool:
    try:
        return httpx.get(stack.url + "/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _both_up(stack: Stack) -> bool:
    try:
        return len(_served_by(stack, 4)) == 2
    except (httpx.HTTPError, AssertionError):
        return False


def _chat(stack: Stack, key: str | None = None, **extra: Any) -> httpx.Response:
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 8,
        **extra,
    }
    return httpx.post(stack.url + "/v1/chat/completions", json=body, headers=stack.headers(key), timeout=120)


def _replica(reply: httpx.Response) -> str:
    return _replica_of(str(reply.json()["id"]))


def _replica_of(completion_id: str) -> str:
    # Completion ids are a per-process random prefix and a counter: the prefix names the replica.
    return completion_id.removeprefix("chatcmpl-")[:16]


def _served_by(stack: Stack, count: int) -> set[str]:
    replies = [_chat(stack, stack.user) for _ in range(count)]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    return {_replica(r) for r in replies}


def _account_key(stack: Stack, account: str, dollars: str) -> str:
    created = httpx.post(
        stack.url + "/api/v1/keys",
        json={"name": account, "account_id": account},
        headers=stack.headers(),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    paid = httpx.post(
        stack.url + "/api/v1/credits/add",
        json={"account_id": account, "amount": dollars},
        headers=stack.headers(),
        timeout=30,
    )
    assert paid.status_code == 200, paid.text
    return str(created.json()["key"])


def _total_usage(stack: Stack, key: str) -> float:
    data = httpx.get(stack.url + "/api/v1/credits", headers=stack.headers(key), timeout=30).json()["data"]
    return float(data["total_usage"])


def test_the_stack_spreads_requests_streams_unbuffered_and_charges_once(stack: Stack) -> None:
    key = _account_key(stack, "spread", "5")  # made on one replica, used on both
    replies = [_chat(stack, key) for _ in range(6)]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert len({_replica(r) for r in replies}) == 2  # both replicas served
    costs = [float(r.json()["usage"]["cost"]) for r in replies]
    assert all(c > 0 for c in costs)

    # The pages, through the load balancer too.
    page = httpx.get(stack.url + "/models", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    # A stream through the load balancer arrives as it is made, not at its end.
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": "Count from one to forty in words."}],
        "max_tokens": 120,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    arrivals: list[float] = []
    started = time.monotonic()
    with httpx.stream(
        "POST", stack.url + "/v1/chat/completions", json=body, headers=stack.headers(key), timeout=120
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    costs.append(float(chunk["usage"]["cost"]))
    assert len(arrivals) > 10
    spread = arrivals[-1] - arrivals[0]
    assert spread > 0.3 * (arrivals[-1] - started), (spread, arrivals[-1] - started)

    # The ledger, shared through PostgreSQL, holds each request's charge once.
    assert wait_until(lambda: abs(_total_usage(stack, key) - sum(costs)) < 1e-9, timeout=20)


def test_a_replica_killed_mid_stream_then_a_rolling_restart_lose_nothing(stack: Stack) -> None:
    key = _account_key(stack, "rolling", "5")  # the load's account: its ledger is checked
    costs: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = _chat(stack, key)
            except httpx.HTTPError as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            with lock:
                if reply.status_code == 200:
                    costs.append(float(reply.json()["usage"]["cost"]))
                else:
                    errors.append(f"{reply.status_code} {reply.text[:200]}")

    # One replica killed (SIGKILL) while it streams: that stream is cut; the other replica takes the rest.
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 400,
        "stream": True,
    }
    killed = ""
    for _ in range(4):  # until a stream lands on gateway-a (the load balancer alternates)
        url = stack.url + "/v1/chat/completions"
        with httpx.stream("POST", url, json=body, headers=stack.headers(stack.user), timeout=120) as streamed:
            lines = streamed.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            stream_id = json.loads(first[6:])["id"]
            if _is_replica(stack, "gateway-a", stack.user, _replica_of(stream_id)):
                stack.podman("kill", stack.container("gateway-a"))
                killed = stream_id
            with contextlib.suppress(httpx.HTTPError):
                for _line in lines:
                    pass
        if killed:
            break
    assert killed
    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(2)  # served by gateway-b alone (HAProxy's check took the dead one out), or the restarted a
    # A rolling restart under load: each replica in turn stops gracefully (SIGTERM: drain, finish) and
    # comes back.
    for container in (stack.container(service) for service in stack.replicas):
        stack.podman("restart", "--time", "40", container, timeout=120)
        assert wait_until(lambda c=container: _ready(stack.podman, c), timeout=60)
        time.sleep(1)
    time.sleep(2)
    stop.set()
    for worker in workers:
        worker.join(120)
    assert errors == []
    assert len(costs) > 10
    # Every answered request is charged once; the killed stream, recovered from its replica's journal, is an
    # interrupted record and no charge.
    assert wait_until(lambda: abs(_total_usage(stack, key) - sum(costs)) < 1e-9, timeout=30), (
        _total_usage(stack, key),
        sum(costs),
    )
    print(f"kill and rolling restart: {len(costs)} requests, {len(errors)} errors, ${sum(costs):.6f} charged")
    # The killed stream: recovered from gateway-a's journal when it came back, as interrupted, not charged.
    found = httpx.get(
        stack.url + "/api/v1/generation", params={"id": killed}, headers=stack.headers(stack.user), timeout=30
    ).json()["data"]
    assert (found["status"], found["total_cost"]) == ("interrupted", 0)


def _is_replica(stack: Stack, service: str, key: str, prefix: str) -> bool:
    """Whether `prefix` (a completion id's process part) is `service`'s: asked of the replica itself."""
    body = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return _replica_of(_chat_in(stack.podman, stack.container(service), key, body)["id"]) == prefix


def _ready(podman: Podman, container: str) -> bool:
    done = podman(
        "exec",
        container,
        "python3",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=2)",
        check=False,
    )
    return done.returncode == 0


# ---- Kubernetes ----------------------------------------------------------------------------------------


def test_the_kubernetes_manifests_render_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("kubectl") is None:
        require("kubectl", "not installed (kubectl kustomize renders the manifests)")
    overlay = ROOT / "deploy" / "kubernetes" / "overlays" / "example"
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    validated = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "-k", "1.32.0", "--strict", "-"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {d["kind"] for d in documents}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    } <= kinds
    gateway = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "kimi-gateway"
    )
    pod = gateway["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/kimi-gateway:0.1.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {e["name"] for e in container["env"]} >= {"DATABASE_URL", "REDIS_URL"}
    # The ConfigMap is configuration the gateway accepts, through the same validation as a file.
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    for name, value in config_map["data"].items():
        monkeypatch.setenv(name, value)
    config = load_config()
    drain, shutdown = config.server.drain_seconds, config.server.shutdown_seconds
    assert pod["terminationGracePeriodSeconds"] > drain + shutdown  # the pod is not killed mid-drain
    vllm = config.providers["selfhosted_vllm"]
    assert (
        vllm.base_url == "http://vllm-kimi-k2-5:8000/v1" and vllm.models["kimi-k2.5"].context_length == 262144
    )
    # The self-hosted model's manifest is what `selfhost --kubernetes` renders today (no drift).
    assert (overlay / "vllm-kimi-k2.5.yaml").read_text() == render_kubernetes("vllm", "kimi-k2.5")
    engine = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "vllm-kimi-k2-5"
    )
    assert engine["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
