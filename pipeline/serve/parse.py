"""Requests -> drafts: JSON (images as base64) or multipart (a `posts` JSON field, images as
parts named `image:<post_id>`). Every problem is a `BadRequest` naming the field, or a
413 when the request carries too much; an image path is refused, never opened."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pipeline.core.errors import PipeError
from pipeline.serve.engine import Draft
from pipeline.serve.uploads import Limits

IMAGE_PART = "image:"  # multipart part name prefix: image:<post_id>


class BadRequest(PipeError):
    """A request the service cannot read; `status` 400 (a field named) or 413 (too much)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what}: not valid JSON ({e})") from None


async def read_body(request: Any, key: str, limits: Limits) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the JSON object, images by post id): from a JSON body, or from multipart's `key` field
    (`user_id` too, for /rank) and `image:<post_id>` parts."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=limits.max_posts, max_fields=limits.max_posts + 8)
        body: dict[str, Any] = {}
        images: dict[str, bytes] = {}
        for name, value in form.multi_items():
            if name.startswith(IMAGE_PART) and hasattr(value, "read"):
                images[name[len(IMAGE_PART):]] = await value.read()
            elif name == key and isinstance(value, str):
                body[key] = _json(value, key)
            elif isinstance(value, str):
                body[name] = value
            else:
                raise BadRequest(f"{name}: a file part must be named {IMAGE_PART}<post_id>")
        return body, images
    if ctype and not ctype.startswith("application/json"):
        raise BadRequest(f"content-type {ctype!r}: send application/json or multipart/form-data")
    body = _json(await request.body(), "body")
    if not isinstance(body, dict):
        raise BadRequest(f"body: a JSON object with a {key!r} list is expected")
    return body, {}


def drafts_of(body: dict[str, Any], images: dict[str, bytes], key: str, limits: Limits,
              user: str | None = None) -> list[Draft]:
    """The drafts of `body[key]`; `user` (for /rank) is every draft's user, and ids default to cand-N."""
    posts = body.get(key)
    if not isinstance(posts, list) or not posts:
        raise BadRequest(f"{key}: a non-empty list of posts is expected")
    if len(posts) > limits.max_posts:
        raise BadRequest(f"{key}: {len(posts)} posts, over the limit of {limits.max_posts} per request", 413)
    drafts = []
    for i, p in enumerate(posts):
        where = f"{key}[{i}]"
        if not isinstance(p, dict):
            raise BadRequest(f"{where}: a JSON object is expected")
        fields = {k: v for k, v in p.items() if k not in ("image", "image_base64")}
        for k, v in fields.items():
            if isinstance(v, (dict, list)) and k not in ("tags", "labels"):
                raise BadRequest(f"{where}.{k}: a string or number is expected")
        if user is not None:
            if fields.get("user_id") not in (None, user):
                raise BadRequest(f"{where}.user_id: {fields['user_id']!r} is not the ranked user {user!r}")
            fields["user_id"] = user
            fields.setdefault("post_id", f"cand-{i + 1}")
        if isinstance(p.get("image"), str) and p["image"]:
            raise BadRequest(f"{where}.image: the service never opens a path; send the bytes as image_base64 "
                             f"or as a multipart part named {IMAGE_PART}<post_id>")
        data = None
        if p.get("image_base64"):
            if not isinstance(p["image_base64"], str):
                raise BadRequest(f"{where}.image_base64: a base64 string is expected")
            b64 = p["image_base64"].split(",", 1)[1] if p["image_base64"].startswith("data:") else p["image_base64"]
            if len(b64) * 3 // 4 > limits.max_image_bytes:
                raise BadRequest(f"{where}.image_base64: over the limit of {limits.max_image_bytes} bytes", 413)
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"{where}.image_base64: not valid base64") from None
        pid = str(fields.get("post_id"))
        if pid in images:
            data = images.pop(pid)
        drafts.append(Draft(fields, data))
    if images:
        raise BadRequest(f"{IMAGE_PART}{next(iter(images))}: no post with that post_id")
    return drafts
