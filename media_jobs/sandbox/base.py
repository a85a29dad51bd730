"""What every emulator shares: in-process state, request log, misbehaviour knobs, processing."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import wraps
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

log = logging.getLogger(__name__)


@dataclass
class Knobs:
    """Ways an emulator can be told to misbehave (set with POST /sandbox/<kind>/_control)."""

    slow: float = 0.0  # seconds to sleep before answering any API call
    fail_next: int = 0  # answer the next N API calls with fail_status
    fail_status: int = 503
    retry_after: int | None = None  # sent with fail_status answers (429/503)
    expire_tokens: bool = False  # every token/key is refused (401) from now on
    unknown_status: int = 0  # the next N status answers carry a status word nobody documents
    drop_webhooks: bool = False  # finish jobs without calling webhooks
    processing_delay: float = 0.0  # a job stays processing at least this long (seconds)
    fail_jobs: str = ""  # jobs end in the provider's error state with this message
    stall: bool = False  # jobs never finish and never progress


@dataclass
class Emulator:
    """One provider's emulator state, shared by its views (one process, guarded by a lock)."""

    kind: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    knobs: Knobs = field(default_factory=Knobs)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.knobs = Knobs()
            self.jobs.clear()
            self.requests.clear()
            self.extra.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def root(self) -> Path:
        # One folder per process: two test runs on one checkout must not delete each other's files.
        return Path(settings.DATA_DIR) / "sandbox" / f"{self.kind}-{os.getpid()}"

    def job_dir(self, job_id: str) -> Path:
        path = self.root / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_id(self, length: int = 22) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "".join(secrets.choice(alphabet) for _ in range(length))

    def record(self, request: HttpRequest) -> None:
        """Keep what was sent, so tests assert on exact URLs, headers and payloads."""
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.GET.items()),
            "content_type": request.content_type,
            "headers": {
                k: v
                for k, v in request.headers.items()
                if k.lower()
                in ("authorization", "api-key", "apy-token", "content-type", "x-csrf-token")
            },
        }
        if request.content_type == "application/json":
            try:
                entry["json"] = json.loads(request.body or b"null")
            except ValueError:
                entry["json"] = None
        elif request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            entry["form"] = dict(request.POST.items())
            entry["files"] = {k: f.name for k, f in request.FILES.items()}
        with self.lock:
            self.requests.append(entry)

    def misbehave(self) -> HttpResponse | None:
        """Apply the knobs that act before an API call is answered."""
        with self.lock:
            knobs = self.knobs
            if knobs.fail_next > 0:
                knobs.fail_next -= 1
                response = JsonResponse(
                    {"error": "emulated failure", "status": knobs.fail_status},
                    status=knobs.fail_status,
                )
                if knobs.retry_after is not None:
                    response["Retry-After"] = str(knobs.retry_after)
                return response
            slow = knobs.slow
        if slow:
            time.sleep(slow)
        return None

    def take_unknown_status(self) -> bool:
        """Return True (once per configured count) when a status answer should be undocumented."""
        with self.lock:
            if self.knobs.unknown_status > 0:
                self.knobs.unknown_status -= 1
                return True
        return False


EMULATORS: dict[str, Emulator] = {}


def emulator(kind: str) -> Emulator:
    """Return the (process-wide) emulator of a provider kind."""
    if kind not in EMULATORS:
        EMULATORS[kind] = Emulator(kind)
    return EMULATORS[kind]


def sandbox_view(kind: str, *, record: bool = True, knobs: bool = True):
    """Wrap an emulator view: 404 unless the sandbox is on; record the call; apply the knobs."""

    def decorate(view: Callable[..., HttpResponse]):
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            if not settings.SANDBOX_PROVIDERS:
                raise Http404
            emu = emulator(kind)
            if record:
                emu.record(request)
            if knobs:
                refused = emu.misbehave()
                if refused is not None:
                    return refused
            return view(request, emu, *args, **kwargs)

        return wrapped

    return decorate


def control_views(kind: str):
    """Return the views every emulator has: _control, _reset and _requests."""

    @csrf_exempt
    def control(request: HttpRequest):
        if not settings.SANDBOX_PROVIDERS:
            raise Http404
        emu = emulator(kind)
        if request.method == "POST":
            values = json.loads(request.body or b"{}")
            names = {f.name for f in fields(Knobs)}
            unknown = set(values) - names
            if unknown:
                return JsonResponse({"error": f"unknown knobs: {sorted(unknown)}"}, status=400)
            with emu.lock:
                for key, value in values.items():
                    setattr(emu.knobs, key, value)
        return JsonResponse(asdict(emu.knobs))

    @csrf_exempt
    def reset(request: HttpRequest):
        if not settings.SANDBOX_PROVIDERS:
            raise Http404
        emulator(kind).reset()
        return JsonResponse({"ok": True})

    def requests_log(request: HttpRequest):
        if not settings.SANDBOX_PROVIDERS:
            raise Http404
        emu = emulator(kind)
        with emu.lock:
            return JsonResponse({"requests": list(emu.requests)})

    return control, reset, requests_log


def in_background(target: Callable[[], None], name: str) -> threading.Thread:
    """Run emulated processing off the request thread, as the real services do."""

    def run():
        from django.db import connection

        try:
            target()
        except Exception:
            log.exception("sandbox job %s crashed", name)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=f"sandbox-{name}", daemon=True)
    thread.start()
    return thread


def send_webhook(emu: Emulator, url: str, **kwargs: Any) -> None:
    """Call a job's webhook the way the provider would (unless told to drop webhooks)."""
    if not url or emu.knobs.drop_webhooks:
        return
    try:
        requests.post(url, timeout=10, **kwargs)
    except requests.RequestException as exc:
        log.info("sandbox %s webhook to %s failed: %s", emu.kind, url, exc)


def bearer(request: HttpRequest) -> str:
    """Return the token of an `Authorization: Bearer` (any case) header, or ''."""
    parts = request.headers.get("Authorization", "").split()
    return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else ""


def error(status: int, **body: Any) -> JsonResponse:
    return JsonResponse(body, status=status)
