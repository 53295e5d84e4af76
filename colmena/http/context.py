"""Typed keys for what the ingress app holds, shared by route modules."""

from __future__ import annotations

from aiohttp import web

from colmena.config import Settings
from colmena.runtime.resources import Resources

SETTINGS = web.AppKey("settings", Settings)
RESOURCES = web.AppKey("resources", Resources)
