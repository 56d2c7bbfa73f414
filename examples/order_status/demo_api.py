"""A tiny order-status API for the order_status example flow.

Run it beside the gateway:

    DEMO_API_TOKEN=demo-token python -m examples.order_status.demo_api --port 8765

It answers `GET /orders/{order_id}` for requests carrying `Authorization: Bearer $DEMO_API_TOKEN`
and remembers every request it saw (`app.state.requests`), so a test can check that the agent's
tool really called it.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ORDERS: dict[str, dict[str, Any]] = {
    "1234": {
        "order_id": "1234",
        "status": "shipped",
        "carrier": "UPS",
        "expected_delivery": "Thursday",
        "customer": {"name": "Ada Lovelace", "phone": "+15550100123"},
    },
    "5678": {
        "order_id": "5678",
        "status": "processing",
        "carrier": None,
        "expected_delivery": "next week",
        "customer": {"name": "Alan Turing", "phone": "+15550100456"},
    },
}


def create_app(token: str | None = None) -> Starlette:
    """The demo API; `token` defaults to $DEMO_API_TOKEN (or "demo-token")."""
    expected = token or os.environ.get("DEMO_API_TOKEN") or "demo-token"
    seen: list[dict[str, Any]] = []

    async def get_order(request: Request) -> JSONResponse:
        order_id = request.path_params["order_id"]
        authorized = request.headers.get("authorization") == f"Bearer {expected}"
        seen.append({"method": request.method, "path": request.url.path, "order_id": order_id, "authorized": authorized})
        if not authorized:
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        order = ORDERS.get(order_id)
        if order is None:
            return JSONResponse({"error": f"no order {order_id}"}, status_code=404)
        return JSONResponse({"order": order})

    app = Starlette(routes=[Route("/orders/{order_id}", get_order)])
    app.state.requests = seen
    return app


def _default_port() -> int:
    """The agent file calls ${DEMO_API_URL:-http://127.0.0.1:8765}: serve where it will call."""
    from urllib.parse import urlparse

    return urlparse(os.environ.get("DEMO_API_URL") or "http://127.0.0.1:8765").port or 8765


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Demo order API for the order_status example")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=_default_port(),
                        help="listen port (default: the port of $DEMO_API_URL, else 8765)")
    args = parser.parse_args()
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
