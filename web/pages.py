"""Tradecord's own pages (the /connect flow): self-contained HTML with strict headers.

Nothing external is loaded; the only style is inline and allowed by its hash; forms may post
only to us (and, after the POST, the browser may be redirected only to Discord's sign-in).
"""

from __future__ import annotations

import base64
import hashlib
import html
from urllib.parse import urlsplit

from aiohttp import web

# overflow-wrap: a long word (a 50-character connection name without spaces) breaks instead
# of widening the box past a phone's screen.
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;"
    "color:#1e1f22;overflow-wrap:anywhere}h1{font-size:1.4em}"
    ".box{border:1px solid #ccc;border-radius:8px;padding:1em 1.2em}"
    ".bad{border-color:#d83c3e}.ok{border-color:#23a55a}"
    "button{font-size:1em;padding:.6em 1.2em;border:0;border-radius:4px;background:#5865f2;"
    "color:#fff;cursor:pointer}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    form_action = " ".join(("'self'", *form_targets))
    return {
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
    }


def page(
    title: str,
    paragraphs: list[str],
    *,
    status: int = 200,
    kind: str = "",
    form_action: str | None = None,
    button: str | None = None,
    form_targets: tuple[str, ...] = (),
) -> web.Response:
    """An HTML page. ``paragraphs`` are plain text (escaped here)."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    form = ""
    if form_action and button:
        form = (
            f'<form method="post" action="{html.escape(form_action)}">'
            f'<button id="continue" type="submit">{html.escape(button)}</button></form>'
        )
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · Tradecord</title><style>{STYLE}</style></head><body>"
        f'<div class="box {kind}"><h1>{html.escape(title)}</h1>{body}{form}</div></body></html>'
    )
    return web.Response(
        text=text, status=status, content_type="text/html", headers=security_headers(form_targets)
    )


def redirect(
    location: str,
    *,
    cookie: str | None = None,
    secure: bool = False,
    form_targets: tuple[str, ...] = (),
) -> web.Response:
    """303 to a location we built (never one taken from the request)."""
    resp = web.Response(
        status=303, headers={**security_headers(form_targets), "Location": location}
    )
    if cookie is not None:
        resp.set_cookie(
            FLOW_COOKIE, cookie, max_age=600, httponly=True, samesite="Lax", secure=secure, path="/"
        )
    return resp


FLOW_COOKIE = "tc_flow"
