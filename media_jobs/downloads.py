"""Download links: presigned URLs on S3, an authorised streaming view on local disk."""

from __future__ import annotations

from django.urls import reverse


def storage_is_local(storage) -> bool:
    """Return whether files live on this machine's disk (so we stream them ourselves)."""
    try:
        storage.path("x")
    except NotImplementedError:
        return False
    return True


def presigned_url(field_file, filename: str) -> str:
    """Return a time-limited URL that downloads the file straight from the object store."""
    return field_file.storage.url(
        field_file.name,
        parameters={"ResponseContentDisposition": f'attachment; filename="{filename}"'},
    )


def output_download_url(request, output) -> str:
    """Return where a client downloads a job output."""
    if not storage_is_local(output.file.storage):
        return presigned_url(output.file, output.filename)
    url = reverse("api:output-download", args=[output.pk])
    return request.build_absolute_uri(url) if request is not None else url


def item_download_url(request, item) -> str:
    """Return where a client downloads an item's stored input."""
    if not item.input_file:
        return ""
    if not storage_is_local(item.input_file.storage):
        return presigned_url(item.input_file, item.original_filename or "input")
    url = reverse("api:item-download", args=[item.pk])
    return request.build_absolute_uri(url) if request is not None else url
