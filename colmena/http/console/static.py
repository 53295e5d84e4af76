"""The console's static files: read once at start-up, served with a year's cache, and tagged
with Subresource Integrity.

Each URL carries a digest of its file (`?v=`), so a new release is a new URL and the long
cache never serves an old file; the tag's `integrity="sha384-..."` lets the browser refuse a
file altered on the way or at rest. Files live in `static/` next to this module; there is no
build step.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from markupsafe import Markup, escape

STATIC_DIR = Path(__file__).parent / "static"
URL_PREFIX = "/console/static/"
CACHE_CONTROL = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    integrity: str
    version: str


class StaticFiles:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.files: dict[str, StaticFile] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                body = path.read_bytes()
                digest = hashlib.sha384(body).digest()
                content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self.files[path.name] = StaticFile(
                    body=body,
                    content_type=content_type,
                    integrity="sha384-" + base64.b64encode(digest).decode("ascii"),
                    version=hashlib.sha256(body).hexdigest()[:12],
                )

    def url(self, name: str) -> str:
        return f"{URL_PREFIX}{name}?v={self.files[name].version}"

    def tag(self, name: str) -> Markup:
        """`<link>` for a stylesheet, `<script defer>` for a script; an unknown name is a bug
        (KeyError at render)."""
        found = self.files[name]
        url, integrity = escape(self.url(name)), escape(found.integrity)
        if name.endswith(".css"):
            return Markup(f'<link rel="stylesheet" href="{url}" integrity="{integrity}">')
        if name.endswith(".js"):
            return Markup(f'<script src="{url}" integrity="{integrity}" defer></script>')
        raise ValueError(f"no tag for {name!r}: only .css and .js files have one")

    async def handler(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=found.body,
            content_type=found.content_type,
            charset="utf-8" if found.content_type.startswith("text/") else None,
            headers={"Cache-Control": CACHE_CONTROL},
        )


STATIC = web.AppKey("console_static", StaticFiles)
