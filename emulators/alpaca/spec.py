"""Alpaca's published OpenAPI files, loaded once with their known defects fixed in memory.

The files under ``emulators/specs/alpaca`` stay as published; ``emulators/specs/README.md``
lists the defects corrected here. Two more found while building the emulator are fixed too:
the authorize ``scope`` parameter is declared as a single enum value although it is a
space-delimited list, and the 2022 ``Exchange`` enum lacks ``CRYPTO``, which crypto positions
carry.
"""

from __future__ import annotations

import copy
import json
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

# openapi-core and PyYAML are test extras: local mode runs the emulator without them, so they
# are imported only when validation is on.
if TYPE_CHECKING:
    from openapi_core import OpenAPI

log = logging.getLogger("tradecord.emulators.alpaca")
SPEC_DIR = Path(__file__).resolve().parent.parent / "specs" / "alpaca"
TRADING_HOSTS = ("https://api.alpaca.markets", "https://paper-api.alpaca.markets")
SCOPE_PATTERN = r"^(account:write|trading|data)( (account:write|trading|data))*$"


@cache
def available() -> bool:
    """Whether the validators can be built here; says so once per process when they cannot."""
    try:
        import openapi_core  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        log.info(
            "openapi-core or PyYAML is not installed: the Alpaca emulator will not "
            "validate requests against the OpenAPI files"
        )
        return False
    return True


def _load(name: str) -> dict[str, Any]:
    import yaml

    with (SPEC_DIR / name).open(encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


# What POST /v2/orders takes (the 2022 file reuses the response schema, which requires both
# qty and notional). Fields as documented on the 2026 "Create an Order" page.
ORDER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["symbol", "type", "side", "time_in_force"],
    "properties": {
        "symbol": {"type": "string", "minLength": 1},
        "qty": {"type": "string", "pattern": r"^\d+(\.\d{1,9})?$"},
        "notional": {"type": "string", "pattern": r"^\d+(\.\d{1,9})?$"},
        "side": {"$ref": "#/components/schemas/OrderSide"},
        "type": {"$ref": "#/components/schemas/OrderType"},
        "time_in_force": {"$ref": "#/components/schemas/TimeInForce"},
        "limit_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
        "stop_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
        "trail_price": {"type": "string"},
        "trail_percent": {"type": "string"},
        "extended_hours": {"type": "boolean"},
        "client_order_id": {"type": "string", "maxLength": 128},
        "order_class": {"$ref": "#/components/schemas/OrderClass"},
        "take_profit": {
            "type": "object",
            "required": ["limit_price"],
            "properties": {"limit_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$"}},
            "additionalProperties": False,
        },
        "stop_loss": {
            "type": "object",
            "required": ["stop_price"],
            "properties": {
                "stop_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
                "limit_price": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
            },
            "additionalProperties": False,
        },
        "position_intent": {
            "type": "string",
            "enum": ["buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close"],
        },
    },
    "additionalProperties": False,
    # exactly one of qty and notional
    "oneOf": [{"required": ["qty"]}, {"required": ["notional"]}],
}


def trading_spec() -> dict[str, Any]:
    spec = copy.deepcopy(_load("trading-api-openapi-2022.yaml"))
    comps = spec["components"]
    schemas = comps["schemas"]
    # OAuth apps authenticate with a bearer token, not the API key headers.
    comps["securitySchemes"] = {"oauth": {"type": "http", "scheme": "bearer"}}
    spec["security"] = [{"oauth": []}]
    schemas["OrderRequest"] = ORDER_REQUEST
    post = spec["paths"]["/v2/orders"]["post"]
    post["requestBody"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/OrderRequest"
    }
    for name in ("Order", "PatchOrderRequest"):
        schemas[name]["properties"]["client_order_id"]["maxLength"] = 128
    for field in ("trail_percent", "trail_price", "hwm"):
        schemas["Order"]["properties"][field]["nullable"] = True
    schemas["OrderStatus"]["enum"].append("held")
    schemas["Exchange"]["enum"].append("CRYPTO")
    spec["paths"]["/v2/orders:by_client_order_id"] = {
        "get": {
            "operationId": "getOrderByClientOrderId",
            "parameters": [
                {
                    "name": "client_order_id",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                {"name": "nested", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}
                    },
                }
            },
        }
    }
    # GET /v2/assets/{symbol_or_asset_id} ("Get an Asset"): documented on docs.alpaca.markets
    # but missing from the 2022 file, whose Assets schema it answers with.
    spec["paths"]["/v2/assets/{symbol_or_asset_id}"] = {
        "get": {
            "operationId": "getAsset",
            "parameters": [
                {
                    "name": "symbol_or_asset_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                }
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Assets"}}
                    },
                },
                "404": {"description": "Not Found"},
            },
        }
    }
    return spec


def token_spec() -> dict[str, Any]:
    return copy.deepcopy(_load("oauth-token-openapi.yaml"))


def authorize_spec() -> dict[str, Any]:
    spec = copy.deepcopy(_load("oauth-authorize-openapi.yaml"))
    params = spec["paths"]["/oauth/authorize"]["get"]["parameters"]
    for p in params:
        if p["name"] == "scope":
            p["schema"] = {"type": "string", "pattern": SCOPE_PATTERN}
    params.append(
        {
            "name": "env",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["live", "paper"]},
        }
    )
    return spec


@cache
def trading_api() -> OpenAPI:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(trading_spec())


@cache
def token_api() -> OpenAPI:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(token_spec())


@cache
def authorize_api() -> OpenAPI:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(authorize_spec())


def _describe(e: BaseException) -> str:
    """The exception's name and its innermost schema messages: short enough for a test log."""
    messages: list[str] = []
    cause: BaseException | None = e
    while cause is not None:
        messages.extend(str(x.message) for x in getattr(cause, "schema_errors", None) or ())
        cause = cause.__cause__
    if messages:  # the schema messages name the field without echoing the whole body
        where = f" ({e.name})" if isinstance(getattr(e, "name", None), str) else ""
        return f"{type(e).__name__}{where}: " + "; ".join(messages)
    return f"{type(e).__name__}: {e}"


def request_errors(
    api: OpenAPI,
    host: str,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
    content_type: str,
) -> list[str]:
    from openapi_core.testing import MockRequest

    req = MockRequest(
        host,
        method.lower(),
        path,
        args=query,
        headers=headers,
        data=body or None,
        content_type=content_type,
    )
    return [_describe(e) for e in api.iter_request_errors(req)]


def response_errors(
    api: OpenAPI,
    host: str,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    status: int,
    body: Any,
) -> list[str]:
    from openapi_core.testing import MockRequest, MockResponse

    req = MockRequest(host, method.lower(), path, args=query, headers=headers)
    data = json.dumps(body).encode() if body is not None else b""
    resp = MockResponse(data, status_code=status)
    return [_describe(e) for e in api.iter_response_errors(req, resp)]
