"""Discord's request validation: the limits that turn a bad payload into 50035 Invalid Form Body.

Errors are collected into Discord's nested shape, e.g.
``{"embeds": {"0": {"title": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", ...}]}}}}``,
so the bot sees exactly what discord.py would log from the real API.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .errors import EMPTY_MESSAGE, APIError
from .state import (
    ACTION_ROW,
    BUTTON,
    CONTAINER,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_SUPPRESS_EMBEDS,
    FLAG_SUPPRESS_NOTIFICATIONS,
    LABEL,
    SECTION,
    SELECT_TYPES,
    STRING_SELECT,
    TEXT_DISPLAY,
    TEXT_INPUT,
    iter_components,
)

JSON = dict[str, Any]
Path = Sequence[str | int]

FLAG_VOICE_MESSAGE = 1 << 13
#: Flags a bot may set when creating a message; Discord ignores the rest.
CREATE_FLAGS = (
    FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_VOICE_MESSAGE | FLAG_COMPONENTS_V2
)
INTERACTION_FLAGS = CREATE_FLAGS | FLAG_EPHEMERAL

_URL = re.compile(r"^(https?|attachment)://\S+$")
_BUTTON_URL = re.compile(r"^(https?|discord)://\S+$")
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")

#: Live Discord errors say "Command exceeds maximum size (8000)" (the docs still say 4000).
MAX_COMMAND_SIZE = 8000

#: Application command option types 1 (SUB_COMMAND) to 11 (ATTACHMENT).
OPTION_TYPES = frozenset(range(1, 12))

V2_TOP_LEVEL = frozenset({ACTION_ROW, SECTION, TEXT_DISPLAY, 12, 13, 14, CONTAINER})


class FormErrors:
    """Collects field errors; ``raise_if_any`` raises Discord's 50035 with the whole tree."""

    def __init__(self) -> None:
        self.tree: JSON = {}

    def add(self, path: Path, code: str, message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: Path, value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def text(self, path: Path, value: Any, limit: int) -> None:
        """An optional string field: a non-string is refused, not measured."""
        if value is not None and not isinstance(value, str):
            self.add(path, "BASE_TYPE_STRING", "Must be a string.")
        else:
            self.max_length(path, value, limit)

    def length_between(self, path: Path, value: Any, low: int, high: int) -> None:
        if not isinstance(value, str | list) or not low <= len(value) <= high:
            self.add(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")

    def required(self, path: Path) -> None:
        self.add(path, "BASE_TYPE_REQUIRED", "This field is required")

    def raise_if_any(self) -> None:
        if self.tree:
            raise APIError(400, 50035, "Invalid Form Body", self.tree)


def validate_message(
    payload: JSON,
    errors: FormErrors,
    prefix: Path = (),
    *,
    allowed_flags: int = CREATE_FLAGS,
) -> int:
    """Check a create/edit message body. Returns the flags Discord keeps."""
    path = list(prefix)
    content = payload.get("content")
    if content is not None:
        if not isinstance(content, str):
            errors.add([*path, "content"], "BASE_TYPE_STRING", "Must be a string.")
        else:
            errors.max_length([*path, "content"], content, 2000)
    raw_flags = payload.get("flags") or 0
    if isinstance(raw_flags, str) and raw_flags.isdigit():
        raw_flags = int(raw_flags)  # a number in a string is coerced, not refused
    if isinstance(raw_flags, bool) or not isinstance(raw_flags, int):
        errors.add([*path, "flags"], "NUMBER_TYPE_COERCE", f'Value "{raw_flags}" is not int.')
        raw_flags = 0
    flags = raw_flags & allowed_flags
    attachments = payload.get("attachments")
    if attachments is not None:
        _objects(
            _array(attachments, errors, [*path, "attachments"]), errors, [*path, "attachments"]
        )
    embeds = payload.get("embeds")
    if embeds is not None:
        _validate_embeds(embeds, errors, [*path, "embeds"])
    components = payload.get("components")
    if components is not None:
        _validate_components(
            components, errors, [*path, "components"], v2=bool(flags & FLAG_COMPONENTS_V2)
        )
    if flags & FLAG_COMPONENTS_V2:
        for key in ("content", "embeds", "poll", "stickers"):
            if payload.get(key):
                errors.add(
                    [*path, key],
                    "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                    f"The '{key}' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
                )
    allowed = payload.get("allowed_mentions")
    if allowed is not None:
        _validate_allowed_mentions(allowed, errors, [*path, "allowed_mentions"])
    return flags


def _iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def ensure_not_empty(message: JSON, *, has_files: bool = False) -> None:
    """Discord refuses a message with nothing to show (whitespace-only content counts as none)."""
    if has_files or message.get("attachments") or message.get("sticker_ids") or message.get("poll"):
        return
    if message.get("components"):
        # Create Message: "at least one of content, embeds, sticker_ids, components, files[n],
        # or poll": buttons alone are a message.
        return
    if (message.get("content") or "").strip() or message.get("embeds"):
        return
    raise EMPTY_MESSAGE


def _array(value: Any, errors: FormErrors, path: list[str | int]) -> list[Any]:
    """A list field; anything else is Discord's BASE_TYPE_ARRAY (not an emulator crash)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
    return []


def _objects(items: list[Any], errors: FormErrors, path: list[str | int]) -> list[tuple[int, JSON]]:
    """The dict entries of an array of objects, with DICT_TYPE_CONVERT for every other entry."""
    result = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            result.append((i, item))
        else:
            errors.add(
                [*path, i], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"
            )
    return result


def _kind(obj: JSON) -> int | None:
    """A ``type`` field usable in set lookups (a list or dict there is simply no valid type)."""
    value = obj.get("type")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def embed_size(embed: JSON) -> int:
    """Characters counted against the 6000 limit (non-strings are refused elsewhere)."""
    total = _chars(embed.get("title")) + _chars(embed.get("description"))
    fields = embed.get("fields")
    for f in fields if isinstance(fields, list) else []:
        if isinstance(f, dict):
            total += _chars(f.get("name")) + _chars(f.get("value"))
    for key, text in (("footer", "text"), ("author", "name")):
        nested = embed.get(key)
        if isinstance(nested, dict):
            total += _chars(nested.get(text))
    return total


def _object(parent: JSON, key: str, errors: FormErrors, path: list[str | int]) -> JSON:
    """A nested object such as an embed's footer; anything else is refused as Discord does."""
    value = parent.get(key) or {}
    if isinstance(value, dict):
        return value
    errors.add([*path, key], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
    return {}


def _validate_embeds(embeds: Any, errors: FormErrors, path: list[str | int]) -> None:
    if not isinstance(embeds, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    if len(embeds) > 10:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return
    total = 0
    for i, embed in enumerate(embeds):
        p = [*path, i]
        if not isinstance(embed, dict):
            errors.add(p, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        author = _object(embed, "author", errors, p)
        footer = _object(embed, "footer", errors, p)
        for text_path, text, limit in (
            (["title"], embed.get("title"), 256),
            (["description"], embed.get("description"), 4096),
            (["author", "name"], author.get("name"), 256),
            (["footer", "text"], footer.get("text"), 2048),
        ):
            errors.text([*p, *text_path], text, limit)
        stamp = embed.get("timestamp")
        if stamp is not None and not _iso8601(stamp):
            # Embed Structure: "timestamp? | ISO8601 timestamp".
            errors.add([*p, "timestamp"], "DATE_TIME_TYPE_INVALID", "Could not parse time.")
        color = embed.get("color")
        if color is not None and (not isinstance(color, int) or not 0 <= color <= 0xFFFFFF):
            errors.add(
                [*p, "color"], "NUMBER_TYPE_MAX", "int value should be <= 16777215 and >= 0."
            )
        for url_path, url in (
            (["url"], embed.get("url")),
            (["image", "url"], _object(embed, "image", errors, p).get("url")),
            (["thumbnail", "url"], _object(embed, "thumbnail", errors, p).get("url")),
            (["author", "url"], author.get("url")),
            (["author", "icon_url"], author.get("icon_url")),
            (["footer", "icon_url"], footer.get("icon_url")),
        ):
            if url is not None and not (isinstance(url, str) and _URL.match(url)):
                errors.add([*p, *url_path], "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        fields = embed.get("fields") or []
        if not isinstance(fields, list):
            errors.add([*p, "fields"], "BASE_TYPE_ARRAY", "Must be an array.")
            fields = []
        if len(fields) > 25:
            errors.add([*p, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for j, f in enumerate(fields[:25]):
            if not isinstance(f, dict):
                errors.add(
                    [*p, "fields", j],
                    "DICT_TYPE_CONVERT",
                    "Only dictionaries may be used in a DictType",
                )
                continue
            for key, limit in (("name", 256), ("value", 1024)):
                value = f.get(key)
                if value is None or value == "":
                    errors.required([*p, "fields", j, key])
                else:
                    errors.text([*p, "fields", j, key], value, limit)
        total += embed_size(embed)
    if total > 6000:
        errors.add(path, "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _validate_allowed_mentions(allowed: Any, errors: FormErrors, path: list[str | int]) -> None:
    if not isinstance(allowed, dict):
        errors.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    parse = allowed.get("parse") or []
    if not isinstance(parse, list):
        errors.add([*path, "parse"], "BASE_TYPE_ARRAY", "Must be an array.")
        parse = []
    for i, value in enumerate(parse):
        if value not in ("users", "roles", "everyone"):
            errors.add(
                [*path, "parse", i],
                "BASE_TYPE_CHOICES",
                "Value must be one of {'users', 'roles', 'everyone'}.",
            )
    for key in ("users", "roles"):
        if key in parse and allowed.get(key):
            errors.add(
                path,
                "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                f'parse:["{key}"] and {key}: [ids...] are mutually exclusive.',
            )
        ids = allowed.get(key) or []
        if not isinstance(ids, list):
            errors.add([*path, key], "BASE_TYPE_ARRAY", "Must be an array.")
            continue
        if len(ids) > 100:
            errors.add([*path, key], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        for i, value in enumerate(ids):
            if not _is_snowflake(value):
                errors.add(
                    [*path, key, i], "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.'
                )
    replied_user = allowed.get("replied_user")
    if replied_user is not None and not isinstance(replied_user, bool):
        errors.add([*path, "replied_user"], "BASE_TYPE_BOOLEAN", "Must be either true or false.")


def _is_snowflake(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return False
    try:
        return 0 <= int(value) < 1 << 64
    except ValueError:
        return False


def _validate_components(
    components: Any, errors: FormErrors, path: list[str | int], *, v2: bool
) -> None:
    if not isinstance(components, list):
        errors.add(path, "BASE_TYPE_ARRAY", "Must be an array.")
        return
    if v2:
        if sum(1 for _ in iter_components(components)) > 40:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
    elif len(components) > 5:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        return
    allowed_top = V2_TOP_LEVEL if v2 else frozenset({ACTION_ROW})
    for i, component in _objects(components, errors, path):
        p = [*path, i]
        ctype = _kind(component)
        if ctype not in allowed_top:
            choices = ", ".join(str(t) for t in sorted(allowed_top))
            errors.add(
                [*p, "type"],
                "UNION_TYPE_CHOICES",
                f'Value of field "type" must be one of ({choices}).',
            )
            continue
        if ctype == ACTION_ROW:
            _validate_row(component, errors, p)
    seen: set[str] = set()
    for component in iter_components(components):
        custom_id = component.get("custom_id")
        if not isinstance(custom_id, str):
            continue
        if custom_id in seen:
            errors.add(
                path, "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
            )
        seen.add(custom_id)
    for component in iter_components(components):
        if component.get("type") == TEXT_DISPLAY:
            errors.max_length([*path, "content"], component.get("content"), 4000)


def _validate_row(row: JSON, errors: FormErrors, path: list[str | int]) -> None:
    children = _array(row.get("components"), errors, [*path, "components"])
    if not children:
        if not isinstance(row.get("components"), str | int | dict):
            errors.add(
                [*path, "components"], "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length."
            )
        return
    if len(children) > 5:
        errors.add([*path, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        return
    width = 0
    for j, child in _objects(children, errors, [*path, "components"]):
        p = [*path, "components", j]
        ctype = _kind(child)
        if ctype == BUTTON:
            width += 1
            _validate_button(child, errors, p)
        elif ctype in SELECT_TYPES:
            width += 5
            _validate_select(child, errors, p)
        else:
            errors.add(
                [*p, "type"],
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (2, 3, 5, 6, 7, 8).',
            )
    if width > 5:
        errors.add(
            [*path, "components"],
            "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
            "The specified component exceeds the maximum width",
        )


def _validate_button(button: JSON, errors: FormErrors, path: list[str | int]) -> None:
    style = button.get("style")
    if style not in (1, 2, 3, 4, 5, 6):
        errors.add(
            [*path, "style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4, 5, 6)."
        )
        return
    errors.text([*path, "label"], button.get("label"), 80)
    if style == 5:
        url = button.get("url")
        if not url:
            errors.required([*path, "url"])
        elif not isinstance(url, str) or not _BUTTON_URL.match(url) or len(url) > 512:
            errors.add([*path, "url"], "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        if button.get("custom_id") is not None:
            errors.add(
                [*path, "custom_id"],
                "COMPONENT_INVALID_CUSTOM_ID",
                "A custom id cannot be used with link buttons",
            )
    elif style != 6:
        _validate_custom_id(button, errors, path)
        # "Non-link and non-premium buttons must have a custom_id, and cannot have a url".
        if button.get("url") is not None:
            errors.add(
                [*path, "url"],
                "BUTTON_COMPONENT_URL_NOT_ALLOWED",
                "A url can only be used with link buttons",
            )


def _validate_custom_id(component: JSON, errors: FormErrors, path: list[str | int]) -> None:
    custom_id = component.get("custom_id")
    if not custom_id:
        errors.required([*path, "custom_id"])
    else:
        errors.text([*path, "custom_id"], custom_id, 100)


def _validate_select(select: JSON, errors: FormErrors, path: list[str | int]) -> None:
    _validate_custom_id(select, errors, path)
    errors.max_length([*path, "placeholder"], select.get("placeholder"), 150)
    min_values = select.get("min_values", 1)
    max_values = select.get("max_values", 1)
    if not isinstance(min_values, int) or not 0 <= min_values <= 25:
        errors.add([*path, "min_values"], "NUMBER_TYPE_MAX", "int value should be <= 25 and >= 0.")
    if not isinstance(max_values, int) or not 1 <= max_values <= 25:
        errors.add([*path, "max_values"], "NUMBER_TYPE_MAX", "int value should be <= 25 and >= 1.")
    if select.get("type") == STRING_SELECT:
        raw_options = select.get("options")
        options = _array(raw_options, errors, [*path, "options"])
        if not 1 <= len(options) <= 25 and not isinstance(raw_options, str | int | dict):
            errors.add(
                [*path, "options"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length."
            )
        values: set[Any] = set()
        for k, option in _objects(options[:25], errors, [*path, "options"]):
            for key in ("label", "value"):
                errors.length_between([*path, "options", k, key], option.get(key), 1, 100)
            errors.max_length([*path, "options", k, "description"], option.get("description"), 100)
            # The later of two equal values is refused (shape taken from a live Discord error).
            value = option.get("value")
            if isinstance(value, str) and value in values:
                errors.add(
                    [*path, "options", k],
                    "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED",
                    "The specified option value is already used",
                )
            if isinstance(value, str):
                values.add(value)
        if isinstance(max_values, int) and max_values > len(options) > 0:
            errors.add(
                [*path, "max_values"],
                "SELECT_COMPONENT_MAX_VALUES_EXCEEDED",
                f"max_values must be less than or equal to the number of options ({len(options)})",
            )


def validate_modal(data: Any, errors: FormErrors, prefix: Path = ("data",)) -> None:
    path = list(prefix)
    if not isinstance(data, dict):
        errors.required(path)
        return
    errors.length_between([*path, "title"], data.get("title"), 1, 45)
    errors.length_between([*path, "custom_id"], data.get("custom_id"), 1, 100)
    components = _array(data.get("components"), errors, [*path, "components"])
    if not 1 <= len(components) <= 5:
        errors.add(
            [*path, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
        )
    for i, component in _objects(components, errors, [*path, "components"]):
        p = [*path, "components", i]
        ctype = component.get("type")
        if ctype == ACTION_ROW:
            children = _array(component.get("components"), errors, [*p, "components"])
            if len(children) != 1:
                errors.add(
                    [*p, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 1 in length."
                )
            for j, child in _objects(children, errors, [*p, "components"]):
                _validate_modal_input(child, errors, [*p, "components", j])
        elif ctype == LABEL:
            errors.length_between([*p, "label"], component.get("label"), 1, 45)
            errors.max_length([*p, "description"], component.get("description"), 100)
            child = component.get("component")
            if not isinstance(child, dict):
                errors.required([*p, "component"])
            else:
                _validate_modal_input(child, errors, [*p, "component"])
        elif ctype == TEXT_DISPLAY:
            errors.max_length([*p, "content"], component.get("content"), 4000)
        else:
            errors.add(
                [*p, "type"],
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (1, 10, 18).',
            )


def _validate_modal_input(child: JSON, errors: FormErrors, path: list[str | int]) -> None:
    _validate_custom_id(child, errors, path)
    if child.get("type") == TEXT_INPUT:
        if child.get("label") is not None:
            errors.max_length([*path, "label"], child.get("label"), 45)
        if child.get("style") not in (1, 2):
            errors.add([*path, "style"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
        errors.max_length([*path, "placeholder"], child.get("placeholder"), 100)
        errors.max_length([*path, "value"], child.get("value"), 4000)
        for key, low in (("min_length", 0), ("max_length", 1)):
            value = child.get(key)
            if value is not None and not (isinstance(value, int) and low <= value <= 4000):
                errors.add(
                    [*path, key], "NUMBER_TYPE_MAX", f"int value should be <= 4000 and >= {low}."
                )
    elif child.get("type") in SELECT_TYPES:
        _validate_select(child, errors, path)


def validate_choices(data: Any, errors: FormErrors) -> list[JSON]:
    choices = (data or {}).get("choices")
    if not isinstance(choices, list):
        errors.required(["data", "choices"])
        return []
    if len(choices) > 25:
        errors.add(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, choice in enumerate(choices[:25]):
        errors.length_between(["data", "choices", i, "name"], choice.get("name"), 1, 100)
        value = choice.get("value")
        if isinstance(value, str):
            errors.max_length(["data", "choices", i, "value"], value, 100)
        elif not isinstance(value, int | float) or isinstance(value, bool):
            errors.required(["data", "choices", i, "value"])
    return choices


def validate_command(payload: Any, errors: FormErrors, prefix: Path = ()) -> None:
    path = list(prefix)
    if not isinstance(payload, dict):
        errors.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        return
    ctype = payload.get("type") or 1
    if ctype not in (1, 2, 3, 4):
        errors.add([*path, "type"], "BASE_TYPE_CHOICES", "Value must be one of (1, 2, 3, 4).")
        return
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        errors.required([*path, "name"])
    elif ctype == 1 and (not _COMMAND_NAME.match(name) or name != name.lower()):
        errors.add([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    elif ctype != 1:
        errors.length_between([*path, "name"], name, 1, 32)
    if ctype == 1:
        errors.length_between([*path, "description"], payload.get("description"), 1, 100)
        options = _array(payload.get("options"), errors, [*path, "options"])
        _validate_options(options, errors, [*path, "options"], depth=0)
        if _command_size(payload) > MAX_COMMAND_SIZE:
            errors.add(
                path,
                "APPLICATION_COMMAND_TOO_LARGE",
                f"Command exceeds maximum size ({MAX_COMMAND_SIZE})",
            )


def _command_size(node: JSON) -> int:
    """Discord's measure: every name, description, choice name and value in the tree."""
    total = _chars(node.get("name")) + _chars(node.get("description"))
    choices = node.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            total += _chars(choice.get("name")) + len(str(choice.get("value", "")))
    options = node.get("options")
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict):
            total += _command_size(option)
    return total


def _validate_options(
    options: list[Any],
    errors: FormErrors,
    path: list[str | int],
    *,
    depth: int,
    parent_type: int | None = None,
) -> None:
    if len(options) > 25:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    names: set[str] = set()
    seen_optional = False
    for i, option in _objects(options, errors, path):
        p = [*path, i]
        name = option.get("name")
        if not isinstance(name, str) or not _COMMAND_NAME.match(name) or name != name.lower():
            errors.add([*p, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        elif name in names:
            errors.add(
                [*p, "name"],
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        names.add(str(name))
        errors.length_between([*p, "description"], option.get("description"), 1, 100)
        otype = _kind(option)
        if otype not in OPTION_TYPES:
            choices = ", ".join(str(t) for t in sorted(OPTION_TYPES))
            errors.add([*p, "type"], "BASE_TYPE_CHOICES", f"Value must be one of ({choices}).")
            continue
        if otype in (1, 2):
            # A group holds subcommands; a subcommand holds only plain options.
            if depth >= 2 or (otype == 2 and depth >= 1) or parent_type == 1:
                errors.add(
                    [*p, "type"],
                    "APPLICATION_COMMAND_OPTION_TYPE_INVALID",
                    "Sub-command nesting is too deep",
                )
            _validate_options(
                _array(option.get("options"), errors, [*p, "options"]),
                errors,
                [*p, "options"],
                depth=depth + 1,
                parent_type=otype,
            )
            continue
        if option.get("required"):
            if seen_optional:
                errors.add(
                    path,
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = _array(option.get("choices"), errors, [*p, "choices"])
        if len(choices) > 25:
            errors.add([*p, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for k, choice in _objects(choices[:25], errors, [*p, "choices"]):
            cp = [*p, "choices", k]
            errors.length_between([*cp, "name"], choice.get("name"), 1, 100)
            errors.max_length([*cp, "value"], choice.get("value"), 100)
        for key, low in (("min_length", 0), ("max_length", 1)):
            value = option.get(key)
            if value is not None and not (isinstance(value, int) and low <= value <= 6000):
                errors.add(
                    [*p, key], "NUMBER_TYPE_MAX", f"int value should be <= 6000 and >= {low}."
                )
        if choices and option.get("autocomplete"):
            errors.add(
                [*p, "autocomplete"],
                "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                "Autocomplete cannot be enabled on options that have choices",
            )
