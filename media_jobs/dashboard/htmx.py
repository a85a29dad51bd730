"""htmx helpers: a partial for htmx requests, the full page otherwise (NetBox's pattern)."""

from __future__ import annotations

from django.http import HttpRequest


def is_htmx(request: HttpRequest) -> bool:
    """Return whether htmx sent the request (it sets `HX-Request: true`)."""
    return request.headers.get("HX-Request") == "true"


def pick_template(request: HttpRequest, page: str, partial: str) -> str:
    """Return the partial template for an htmx request, the full page otherwise."""
    return partial if is_htmx(request) else page
