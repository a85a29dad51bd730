"""Mount each provider emulator under /sandbox/<kind>/ (404 unless SANDBOX_PROVIDERS is on)."""

from django.urls import include, path

from media_jobs.sandbox import base

EMULATOR_URLS = {
    "auphonic": "media_jobs.sandbox.auphonic",
    "dolby": "media_jobs.sandbox.dolby",
    "apyhub": "media_jobs.sandbox.apyhub",
    "audioscrape": "media_jobs.sandbox.audioscrape",
    "respeecher": "media_jobs.sandbox.respeecher",
}

urlpatterns = []
for kind, module in EMULATOR_URLS.items():
    control, reset, requests_log = base.control_views(kind)
    urlpatterns += [
        path(f"{kind}/_control", control),
        path(f"{kind}/_reset", reset),
        path(f"{kind}/_requests", requests_log),
        path(f"{kind}/", include(module)),
    ]
