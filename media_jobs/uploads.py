"""Upload handling that enforces a dataset's size cap while the body streams in."""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler


class UploadTooLarge(Exception):
    """The uploaded file passed the dataset's size cap."""


class SizeLimitUploadHandler(FileUploadHandler):
    """Count the bytes of each uploaded file and stop as soon as one passes `max_bytes`."""

    def __init__(self, request=None, *, max_bytes: int):
        super().__init__(request)
        self.max_bytes = max_bytes

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.max_bytes:
            raise UploadTooLarge
        return raw_data  # hand the chunk on to the handler that spools it to disk

    def file_complete(self, file_size: int):
        return None


def limit_upload_size(request, max_bytes: int) -> None:
    """Install the size guard on a Django request before its body is parsed."""
    request.upload_handlers.insert(0, SizeLimitUploadHandler(request, max_bytes=max_bytes))
