"""The provider HTTP seam: multipart uploads stream from disk and arrive as Django reads them."""

from __future__ import annotations

import io
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from django.test import RequestFactory

from media_jobs.providers import http


class Recorder(BaseHTTPRequestHandler):
    """Keep each POST's headers and exactly Content-Length bytes of its body; answer `{}`."""

    timeout = 10  # a body shorter than its Content-Length fails the test instead of hanging it

    def do_POST(self) -> None:
        if self.headers["Content-Length"] is None:
            self.send_error(411)  # a chunked body: not what upload promises
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    srv.received = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


class SpyReader(io.BufferedReader):
    """A file opened for upload that notes the size of every read asked of it."""

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().read(size)


class SpyPath(type(Path())):
    """A path whose opened file is a SpyReader (kept in .opened)."""

    def open(self, mode: str = "r", *args, **kwargs):
        assert mode == "rb"
        self.opened = SpyReader(io.FileIO(self, "rb"))
        self.opened.sizes = []
        return self.opened


def test_upload_streams_a_file_with_a_content_length_that_django_decodes(server, tmp_path):
    audio = tmp_path / "take one.wav"
    audio.write_bytes(random.Random(7).randbytes(6 * 1024 * 1024 + 7))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"00:00 Intro\n")
    spy = SpyPath(audio)
    session = requests.Session()
    session.trust_env = False  # no proxy between us and 127.0.0.1
    provider = SimpleNamespace(
        kind="test", label="Test", base_url=lambda: f"http://127.0.0.1:{server.server_port}/api/"
    )
    client = http.ProviderClient(
        provider, headers=lambda: {"Authorization": "Bearer k"}, session=session
    )

    response = http.upload(
        client,
        "POST",
        "items",
        fields={"title": "Café", "dataset": "123"},
        files={
            "audio": ("take one.wav", spy),
            "chapters": ("notes.txt", notes, "application/octet-stream"),  # not text/plain
        },
        headers={"X-Trace": "abc"},
        timeout=30,
    )

    assert client.json_of(response) == {}
    # Streamed: the file was read in bounded pieces as the body went out, never all at once.
    sizes = spy.opened.sizes
    assert len(sizes) > 10 and all(0 < n <= http.CHUNK for n in sizes), sizes[:5]
    assert spy.opened.closed
    [(headers, body)] = server.received
    assert "Transfer-Encoding" not in headers
    assert int(headers["Content-Length"]) == len(body) > audio.stat().st_size
    assert headers["Authorization"] == "Bearer k" and headers["X-Trace"] == "abc"
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    # What a Django view would see.
    request = RequestFactory().generic(
        "POST", "/api/items", data=body, content_type=headers["Content-Type"]
    )
    assert request.POST.dict() == {"title": "Café", "dataset": "123"}
    upload = request.FILES["audio"]
    assert (upload.name, upload.content_type) == ("take one.wav", "audio/x-wav")
    assert upload.read() == audio.read_bytes()
    chapters = request.FILES["chapters"]
    assert (chapters.name, chapters.content_type) == ("notes.txt", "application/octet-stream")
    assert chapters.read() == b"00:00 Intro\n"
