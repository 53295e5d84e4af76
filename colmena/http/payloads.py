"""Request bodies and answer fields of the tenant and admin API: JSON in, field errors, times."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from colmena.http.errors import ApiError


async def json_body(request: web.Request) -> Any:
    """The parsed body; 400 `invalid_json` when it is not JSON (or nests too deep to parse)."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not JSON") from None


def field_errors(errors: list[tuple[str, str]], message: str) -> ApiError:
    """422 `invalid_fields` naming every (field, problem)."""
    return ApiError(
        422, "invalid_fields", message, fields=[{"field": f, "message": m} for f, m in errors]
    )


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def bad_parameter(parameter: str, message: str) -> ApiError:
    """A 400 naming the query parameter that is wrong."""
    return ApiError(400, "invalid_parameter", message, parameter=parameter)


def query_params(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query as a plain dict, refusing unknown and repeated parameters (a typo must not pass
    silently as "no filter")."""
    query = request.rel_url.query
    for name in query:
        if name not in allowed:
            known = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise bad_parameter(name, f"unknown parameter {name!r}; {known}")
        if len(query.getall(name)) > 1:
            raise bad_parameter(name, f"parameter {name!r} given more than once")
    return dict(query)
