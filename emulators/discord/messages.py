"""Request bodies for creating and editing messages: JSON or multipart with ``payload_json``.

Shared by channel routes, interaction callbacks and interaction webhooks, which Discord
handles with the same rules (limits, attachments by index, "empty message").
"""

from __future__ import annotations

import mimetypes
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .errors import APIError
from .state import JSON, AttachmentBlob, World
from .validation import FormErrors

MAX_ATTACHMENTS = 10
#: The ``attachment_size_limit`` sent in interactions (Discord's default for unboosted servers).
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    content_type: str
    data: bytes


def attachment_json(
    world: World,
    blob: AttachmentBlob,
    channel_id: int,
    *,
    description: str | None = None,
    ephemeral: bool = False,
    title: str | None = None,
) -> JSON:
    quoted = urllib.parse.quote(blob.filename)
    url = f"{world.cdn_base}/attachments/{channel_id}/{blob.id}/{quoted}"
    data: JSON = {
        "id": str(blob.id),
        "filename": blob.filename,
        "size": len(blob.data),
        "url": url,
        "proxy_url": url,
        "content_type": blob.content_type,
        "content_scan_version": 0,
    }
    if description is not None:
        data["description"] = description
    if title is not None:
        data["title"] = title
    if ephemeral:
        data["ephemeral"] = True
    return data


def store_upload(
    world: World, filename: str, data: bytes, content_type: str | None = None
) -> AttachmentBlob:
    guessed = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return world.store_attachment(filename, guessed, data)


def resolve_attachments(
    world: World,
    body: JSON,
    files: list[UploadedFile],
    *,
    channel_id: int,
    existing: list[JSON] | None,
    ephemeral: bool,
    prefix: tuple[str, ...] = (),
) -> list[JSON] | None:
    """The message's attachment list after this request, or None when it does not change them.

    ``attachments`` entries either keep an existing attachment (its snowflake id) or name a
    new upload by the index of its ``files[n]`` part, as Discord's uploading rules say.
    """
    if len(files) > MAX_ATTACHMENTS:
        errors = FormErrors()
        errors.add(
            [*prefix, "attachments"],
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_ATTACHMENTS} or fewer in length.",
        )
        errors.raise_if_any()
    for upload in files:
        if len(upload.data) > ATTACHMENT_SIZE_LIMIT:
            raise APIError(413, 40005, "Request entity too large")
    by_index = {f.index: f for f in files}
    listed = body.get("attachments")
    if listed is None:
        if not files:
            return None
        entries: list[Any] = [{"id": f.index} for f in files]
        kept = list(existing or [])
    else:
        entries = listed
        kept = []
    existing_by_id = {a["id"]: a for a in existing or []}
    result: list[JSON] = list(kept)
    errors = FormErrors()
    for i, entry in enumerate(entries):
        raw_id = entry.get("id") if isinstance(entry, dict) else None
        sid = str(raw_id)
        if sid in existing_by_id:
            result.append(existing_by_id[sid])
            continue
        try:
            index = int(raw_id)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            index = -1
        found = by_index.get(index)
        if found is None:
            errors.add(
                [*prefix, "attachments", i, "id"],
                "ATTACHMENT_NOT_FOUND",
                f"Attachment {raw_id} not found",
            )
            continue
        filename = (entry.get("filename") if isinstance(entry, dict) else None) or found.filename
        blob = store_upload(world, filename, found.data, found.content_type)
        result.append(
            attachment_json(
                world,
                blob,
                channel_id,
                description=entry.get("description") if isinstance(entry, dict) else None,
                ephemeral=ephemeral,
                title=entry.get("title") if isinstance(entry, dict) else None,
            )
        )
    errors.raise_if_any()
    if len(result) > MAX_ATTACHMENTS:
        errors.add(
            [*prefix, "attachments"],
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_ATTACHMENTS} or fewer in length.",
        )
        errors.raise_if_any()
    return result


def edit_changes(body: JSON, attachments: list[JSON] | None) -> JSON:
    """The subset of a PATCH body that changes the message."""
    changes: JSON = {
        k: body[k]
        for k in ("content", "embeds", "components", "allowed_mentions", "flags")
        if k in body
    }
    if attachments is not None:
        changes["attachments"] = attachments
    return changes
