"""The ASGI side of noticing a client leave: a `Gone` for the core's DisconnectWatch (core/disconnects.py)."""

from __future__ import annotations

from starlette.types import Receive

from kimi_gateway.core.disconnects import Gone


def client_gone(receive: Receive) -> Gone:
    """Returns once the client has disconnected. Only for a request whose body has been read: the next
    message can then only be the disconnect."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return gone
