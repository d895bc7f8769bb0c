"""Remote MCP servers through the Responses API's `mcp` tool, and the operator's own ([tools.mcp.servers]):
a real MCP server built with the `mcp` SDK on loopback, a scripted model that calls its tool, the SDK's
`openai` client. Tools listed, a call run, its approval asked and given, a server URL at a private address
refused (the allow-listed loopback excepted), the operator's headers sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from kimi_gateway.testing import GatewayProcess
from tests import billing
from tests.billing import K25
from tests.fakes.mcp_server import OrdersServer
from tests.fakes.upstream import FakeUpstream
from tests.fakes.web import OrderAgent

TOKEN_ENV = "KG_TEST_ORDERS_TOKEN"


@pytest.fixture(scope="module")
def orders() -> Iterator[OrdersServer]:
    server = OrdersServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(
    fake_servers: dict[str, FakeUpstream], orders: OrdersServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    extra = f"""
[media]
allow_hosts = ["127.0.0.1:{orders.port}"]

[tools.mcp.servers.shop]
url = "{orders.url}"
allowed_tools = ["lookup_order"]
headers_env = {{ "X-Shop-Token" = "{TOKEN_ENV}" }}
"""
    workdir = tmp_path_factory.mktemp("mcp")
    from kimi_gateway.testing import GatewayProcess as Process
    from tests.upstreams import KEY, KEY_ENV

    gw = Process(
        workdir, billing.config(fake_servers["moon"], extra=extra), env={KEY_ENV: KEY, TOKEN_ENV: "s3cret"}
    )
    ops = billing.Operator(gw)
    key = ops.key_for("acct_mcp")
    ops.recharge("acct_mcp", "5")
    yield gw, key
    gw.stop()


@pytest.fixture()
def server(orders: OrdersServer, fakes: dict[str, FakeUpstream]) -> OrdersServer:
    orders.reset()
    fakes["moon"].agent = OrderAgent()
    return orders


def _client(gateway: tuple[GatewayProcess, str]) -> openai.OpenAI:
    gw, key = gateway
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0)


def _tool(server: OrdersServer, **fields: Any) -> Any:
    return {"type": "mcp", "server_label": "orders", "server_url": server.url, **fields}


def test_mcp_tools_listed_and_called(
    gateway: tuple[GatewayProcess, str], server: OrdersServer, fakes: dict[str, FakeUpstream]
) -> None:
    response = _client(gateway).responses.create(
        model=K25,
        input="Where is my order A1?",
        tools=[_tool(server, require_approval="never", headers={"Authorization": "Bearer client-token"})],
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"]
    listed = response.output[0]
    assert listed.type == "mcp_list_tools" and listed.server_label == "orders"
    assert sorted(t.name for t in listed.tools) == ["cancel_order", "lookup_order"]
    call = response.output[1]
    assert call.type == "mcp_call" and call.name == "lookup_order" and call.server_label == "orders"
    assert call.output == "Order A1: shipped on 2026-12-01, arriving 2026-12-04."
    assert "shipped on 2026-12-01" in response.output_text
    assert server.calls == [{"order_id": "A1"}]
    # The model was offered the server's tools as functions, named by server.
    offered = [t["function"]["name"] for t in fakes["moon"].requests[0].body["tools"]]
    assert offered == ["orders__lookup_order", "orders__cancel_order"]
    # The client's header went to the MCP server, and to nowhere else.
    assert all(h.get("authorization") == "Bearer client-token" for h in server.headers)
    assert "client-token" not in str([r.body for r in fakes["moon"].requests])
    assert "client-token" not in str(response.model_dump())


def test_mcp_call_waits_for_approval(
    gateway: tuple[GatewayProcess, str], server: OrdersServer, fakes: dict[str, FakeUpstream]
) -> None:
    client = _client(gateway)
    first = client.responses.create(model=K25, input="Where is my order A1?", tools=[_tool(server)])
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    asked = first.output[1]
    assert asked.type == "mcp_approval_request" and asked.name == "lookup_order"
    assert server.calls == []  # nothing runs before the client says so
    second = client.responses.create(
        model=K25,
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}],
        tools=[_tool(server)],
    )
    assert server.calls == [{"order_id": "A1"}]
    kinds = [item.type for item in second.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "message"]
    assert second.output[1].output.startswith("Order A1: shipped")  # type: ignore[union-attr]
    assert "shipped on 2026-12-01" in second.output_text
    # A denial runs nothing: the model hears that the user said no.
    third = client.responses.create(model=K25, input="And order B2?", tools=[_tool(server)])
    request = next(item for item in third.output if item.type == "mcp_approval_request")
    server.reset()
    denied = client.responses.create(
        model=K25,
        previous_response_id=third.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False}],
        tools=[_tool(server)],
    )
    assert server.calls == []
    assert "did not approve" in denied.output_text


def test_mcp_server_at_a_private_address_is_refused(
    gateway: tuple[GatewayProcess, str], server: OrdersServer
) -> None:
    # The same server by another name: localhost is not the allow-listed "127.0.0.1:port".
    for url in (
        f"http://localhost:{server.port}/mcp",
        f"http://[::1]:{server.port}/mcp",
        "http://10.0.0.1/mcp",
    ):
        response = _client(gateway).responses.create(
            model=K25,
            input="Where is my order A1?",
            tools=[{"type": "mcp", "server_label": "orders", "server_url": url, "require_approval": "never"}],
        )
        listed = response.output[0]
        assert listed.type == "mcp_list_tools" and listed.error is not None and "public" in listed.error
        assert listed.tools == []
    assert server.headers == []  # not one request reached it


def test_the_operators_mcp_server_by_label(gateway: tuple[GatewayProcess, str], server: OrdersServer) -> None:
    stream = _client(gateway).responses.create(
        model=K25,
        input="Where is my order A1?",
        tools=[{"type": "mcp", "server_label": "shop"}],  # no URL: the operator's server of that name
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert "response.mcp_list_tools.completed" in kinds
    assert "response.mcp_call.completed" in kinds and "response.mcp_call_arguments.done" in kinds
    final = events[-1].response  # type: ignore[union-attr]
    listed = final.output[0]
    assert [t.name for t in listed.tools] == ["lookup_order"]  # its allowed_tools
    assert server.calls == [{"order_id": "A1"}]
    # The operator's token, from the environment, went to the server; never to the client.
    assert all(h.get("x-shop-token") == "s3cret" for h in server.headers)
    assert "s3cret" not in str(final.model_dump())


def test_chat_completions_use_the_operators_mcp_server(
    gateway: tuple[GatewayProcess, str], server: OrdersServer
) -> None:
    reply = _client(gateway).chat.completions.create(
        model=K25,
        messages=[{"role": "user", "content": "Where is my order A1?"}],
        tools=[{"type": "mcp", "server_label": "shop"}],  # type: ignore[list-item]
    )
    assert "shipped on 2026-12-01" in (reply.choices[0].message.content or "")
    assert server.calls == [{"order_id": "A1"}]
    with pytest.raises(openai.BadRequestError) as refused:  # no approval protocol in chat
        _client(gateway).chat.completions.create(
            model=K25,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "mcp", "server_label": "shop", "require_approval": "always"}],  # type: ignore[list-item]
        )
    assert "Responses API" in refused.value.message


def test_chat_completions_mcp_streamed(gateway: tuple[GatewayProcess, str], server: OrdersServer) -> None:
    chunks = list(
        _client(gateway).chat.completions.create(
            model=K25,
            messages=[{"role": "user", "content": "Where is my order A1?"}],
            tools=[{"type": "mcp", "server_label": "shop"}],  # type: ignore[list-item]
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "shipped on 2026-12-01" in text
    # The server's tool is the gateway's to call: no tool call reaches the client.
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert server.calls == [{"order_id": "A1"}]


def test_anthropic_mcp_connector_streamed(gateway: tuple[GatewayProcess, str], server: OrdersServer) -> None:
    import anthropic

    gw, key = gateway
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    with client.beta.messages.stream(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "Where is my order A1?"}],
        mcp_servers=[{"type": "url", "url": server.url, "name": "orders"}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "orders"}],
        betas=["mcp-client-2025-11-20"],
    ) as stream:
        final = stream.get_final_message()
    kinds = [block.type for block in final.content]
    assert kinds[-3:] == ["mcp_tool_use", "mcp_tool_result", "text"]
    use, result = final.content[-3], final.content[-2]
    assert use.name == "lookup_order" and use.input == {"order_id": "A1"}  # type: ignore[union-attr]
    assert result.tool_use_id == use.id  # type: ignore[union-attr]
    assert "shipped on 2026-12-01" in final.content[-1].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert server.calls == [{"order_id": "A1"}]


def test_anthropic_mcp_connector(gateway: tuple[GatewayProcess, str], server: OrdersServer) -> None:
    import anthropic

    gw, key = gateway
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    reply = client.beta.messages.create(
        model=K25,
        max_tokens=300,
        messages=[{"role": "user", "content": "Where is my order A1?"}],
        mcp_servers=[{"type": "url", "url": server.url, "name": "orders", "authorization_token": "tok-1"}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "orders"}],
        betas=["mcp-client-2025-11-20"],
    )
    kinds = [block.type for block in reply.content]
    assert kinds == ["mcp_tool_use", "mcp_tool_result", "text"]
    use, result = reply.content[0], reply.content[1]
    assert use.name == "lookup_order" and use.server_name == "orders" and use.input == {"order_id": "A1"}  # type: ignore[union-attr]
    assert result.tool_use_id == use.id and result.is_error is False  # type: ignore[union-attr]
    assert "shipped on 2026-12-01" in result.content[0].text  # type: ignore[union-attr, index]
    assert all(h.get("authorization") == "Bearer tok-1" for h in server.headers)
    assert "tok-1" not in str(reply.model_dump())
