"""The vendored TradeStation v3 OpenAPI file, with its published defects fixed in memory,
and a validator for what the emulator receives (and, in tests, what it answers).

The file is kept byte-for-byte as published (emulators/specs/README.md lists its defects);
``load_spec`` applies the fixes each time it is read, so the emulator validates against what
the vendor means rather than what the file says.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

# openapi-core (and werkzeug with it) is a test extra: local mode runs the emulator without
# it, so it is imported only when validation is on.
if TYPE_CHECKING:
    from openapi_core import OpenAPI

log = logging.getLogger("tradecord.emulators.tradestation")

SPEC_PATH = (
    Path(__file__).resolve().parent.parent
    / "specs"
    / "tradestation"
    / ("tradestation-webapi-v3-openapi.json")
)
SERVER = "https://api.tradestation.com"

DURATIONS = ("DAY", "DYP", "GTC", "GCP", "GTD", "GDP", "OPG", "CLO", "IOC", "FOK", "1", "3", "5")
TRADE_ACTIONS = (
    "BUY",
    "SELL",
    "BUYTOCOVER",
    "SELLSHORT",
    "BUYTOOPEN",
    "BUYTOCLOSE",
    "SELLTOOPEN",
    "SELLTOCLOSE",
)
_TIMESTAMP_SCHEMAS = ("TimeStamp", "TimeUtc", "TimeUtc1", "ExpirationDate", "Expiration")
_ARRAY_200 = (
    "/v3/orderexecution/orders",
    "/v3/orderexecution/orderconfirm",
    "/v3/orderexecution/ordergroups",
    "/v3/orderexecution/ordergroupconfirm",
)
# ``{accounts}`` takes 1-25 comma-separated ids; quotes take at most 100 symbols.
ACCOUNTS_PATTERN = r"^[^,]+(,[^,]+){0,24}$"
SYMBOLS_PATTERN = r"^[^,]+(,[^,]+){0,99}$"


def _any_case(words: tuple[str, ...]) -> str:
    """A regex accepting each word in any letter case: the vendor's own examples send ``Buy``
    and ``Day`` where the prose lists ``BUY`` and ``DAY``."""

    def one(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return "^(?:" + "|".join(one(w) for w in words) + ")$"


def patched_spec() -> dict[str, Any]:
    raw = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    spec = copy.deepcopy(raw)
    schemas = spec["components"]["schemas"]
    # `type: strings` makes strict validators reject the whole file.
    schemas["BalanceDetail1"]["properties"]["MaintenanceMargin"]["type"] = "string"
    # Timestamps declared as objects are RFC 3339 strings in every example.
    for name in _TIMESTAMP_SCHEMAS:
        schemas[name] = {"type": "string", "description": schemas[name].get("description", "")}
    for leg in ("OrderLeg", "OrderLeg1"):
        schemas[leg]["properties"]["ExpirationDate"] = {"type": "string"}
    # Order placement answers one object, as the file's own example shows.
    for path in _ARRAY_200:
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        content["schema"] = content["schema"]["items"]
    # Enums stated only in prose.
    schemas["Duration"] = {"type": "string", "pattern": _any_case(DURATIONS)}
    schemas["TradeAction"] = {"type": "string", "pattern": _any_case(TRADE_ACTIONS)}
    # A replace "Requires at least one updated property", and "Order type can only be
    # updated to `Market`".
    replace = schemas["OrderReplaceRequest"]
    replace["minProperties"] = 1
    replace["properties"]["OrderType"] = {**replace["properties"]["OrderType"], "enum": ["Market"]}
    for path, item in spec["paths"].items():
        for op in item.values():
            for param in op.get("parameters", []):
                if param.get("in") != "path":
                    continue
                if param["name"] == "accounts":
                    param["schema"] = {"type": "string", "pattern": ACCOUNTS_PATTERN}
                elif param["name"] == "symbols" and path.startswith("/v3/marketdata/quotes"):
                    param["schema"] = {"type": "string", "pattern": SYMBOLS_PATTERN}
    return spec


@cache
def available() -> bool:
    """Whether the validator can be built here; says so once per process when it cannot."""
    try:
        import openapi_core  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError:
        log.info(
            "openapi-core is not installed: the TradeStation emulator will not validate "
            "requests against the OpenAPI file"
        )
        return False
    return True


@cache
def openapi() -> OpenAPI:
    """Parsed once per process: building the validator takes most of a second."""
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(patched_spec())


@dataclass
class SpecRequest:
    """What openapi-core needs to know about one request, with the emulator's host prefix
    (``/live``, ``/sim``) already removed from ``path``."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes | None
    content_type: str
    host_url: str = SERVER

    def __post_init__(self) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.method = self.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict([(k, v) for k, vs in self.query.items() for v in vs]),
            header=Headers(self.headers),
            cookie=ImmutableMultiDict(),
        )


@dataclass
class SpecResponse:
    status_code: int
    data: bytes
    content_type: str
    headers: dict[str, str]


def _describe(errors: list[Exception]) -> list[str]:
    out: list[str] = []
    for err in errors:
        detail = err.__cause__ or err
        nested = getattr(detail, "schema_errors", None)
        if nested:
            out.extend(f"{type(err).__name__}: {e.message}" for e in nested)
        else:
            out.append(f"{type(err).__name__}: {detail}")
    return out


def request_errors(request: SpecRequest) -> list[str]:
    """Human-readable reasons the request does not conform; empty when it does."""
    result = openapi().unmarshal_request(request)
    return _describe(list(result.errors))


def response_errors(request: SpecRequest, response: SpecResponse) -> list[str]:
    result = openapi().unmarshal_response(request, response)
    return _describe(list(result.errors))
