"""The provider interface, its parameters and credentials, and its one error type."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_jobs.models import Job, ProviderAccount
    from media_jobs.providers.context import JobContext
    from media_jobs.providers.http import ProviderClient

# progress(percent 0-100, stage) -> False to stop the work (the job was cancelled).
ProgressFn = Callable[[int, str], bool]


class ProviderError(Exception):
    """A provider refused or failed.

    permanent: retrying cannot help (rejected input, bad credentials): the job fails at once.
    auth: the provider refused the account's credentials: the account is disabled as well.
    retry_after: seconds the provider asked us to wait (429/503 `Retry-After`).
    status: the HTTP status of the answer, when there was one (adapters react to some).
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        auth: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.permanent = permanent or auth
        self.auth = auth
        self.retry_after = retry_after


class JobCancelled(Exception):
    """The job was cancelled while a provider worked on it."""


@dataclass
class Output:
    """A result file on local disk, ready to be copied into storage."""

    format: str
    filename: str
    path: Path
    size: int
    checksum: str
    statistics: dict[str, Any] = field(default_factory=dict)
    kind: str = "media"  # or "report": an analysis artifact such as the waveform image


@dataclass
class RunResult:
    outputs: list[Output]
    statistics: dict[str, Any]
    transcript: Any = None  # set by transcription providers; stored on the item


# The public job vocabulary (Dolby's); adapters map their provider's words onto it.
PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = (
    "pending",
    "running",
    "success",
    "failed",
    "cancelled",
)


@dataclass
class RemoteStatus:
    """Where a remote job stands. Unknown provider states must map to RUNNING, never FAILED."""

    state: str
    progress: int | None = None  # 0-100 when the provider says (only Dolby does)
    stage: str = ""  # the provider's own word for the step, shown to users
    message: str = ""  # the provider's error text when FAILED


@dataclass(frozen=True)
class Param:
    """A preset parameter a provider accepts; forms and validation are derived from these."""

    name: str
    type: type
    label: str
    help: str = ""
    choices: tuple[Any, ...] = ()
    default: Any = None
    required: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class CredentialField:
    """A credential an account needs; secret ones are encrypted and never shown again."""

    name: str
    label: str
    secret: bool = True
    required: bool = True
    help: str = ""


class Provider:
    """What every provider implements.

    Inline providers (the built-in engine) do the work inside the worker in `run`. Remote
    providers `submit` (returning the provider's job id), are `poll`ed by the scheduler until
    they end, and `collect` their results into local files the service copies into storage.
    """

    kind: str = ""
    label: str = ""
    auth_kinds: tuple[str, ...] = ()
    inline: bool = False
    can_cancel: bool = False
    has_webhooks: bool = False
    parameters: tuple[Param, ...] = ()
    credential_fields: tuple[CredentialField, ...] = ()

    # --- presets -------------------------------------------------------------------------

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return normalised parameters or raise ValueError naming what is wrong."""
        return validate_declared(self.parameters, params)

    # --- inline providers ----------------------------------------------------------------

    def run(self, job: Job, *, input_path: Path, workdir: Path, progress: ProgressFn) -> RunResult:
        """Process the job's input to finished outputs (inline providers only)."""
        raise NotImplementedError

    # --- remote providers ----------------------------------------------------------------

    def submit(self, ctx: JobContext) -> str:
        """Start the remote job and return its id; save intermediate ids with ctx.save_state."""
        raise NotImplementedError

    def poll(self, ctx: JobContext) -> RemoteStatus:
        """Return the remote job's status."""
        raise NotImplementedError

    def collect(self, ctx: JobContext) -> RunResult:
        """Download the results into ctx.workdir."""
        raise NotImplementedError

    def cancel(self, ctx: JobContext) -> None:
        """Stop the remote job where the service can."""

    # --- accounts ------------------------------------------------------------------------

    def auth_headers(self, account: ProviderAccount) -> dict[str, str]:
        """Return the headers that authenticate a request for this account."""
        raise NotImplementedError

    def check_account(self, client: ProviderClient) -> str:
        """Make a cheap authenticated call; return a name for the account (its identity)."""
        raise NotImplementedError

    def base_url(self) -> str:
        """Return the API base URL (from settings, so tests and demos can point elsewhere)."""
        from django.conf import settings

        return settings.PROVIDER_BASE_URLS[self.kind]


def validate_declared(parameters: tuple[Param, ...], params: dict[str, Any]) -> dict[str, Any]:
    """Validate parameters against declared Params: known names, types, choices and ranges."""
    if not isinstance(params, dict):
        raise ValueError("Parameters must be a JSON object.")
    known = {p.name: p for p in parameters}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"Unknown parameters: {', '.join(unknown)}. Known: {', '.join(known) or 'none'}."
        )
    out: dict[str, Any] = {}
    errors: list[str] = []
    for p in parameters:
        if p.name not in params or params[p.name] in (None, ""):
            if p.required:
                errors.append(f"{p.name}: required")
            elif p.default is not None:
                out[p.name] = p.default
            continue
        value = params[p.name]
        try:
            value = coerce(p, value)
        except (TypeError, ValueError) as exc:
            errors.append(f"{p.name}: {exc}")
            continue
        out[p.name] = value
    if errors:
        raise ValueError("; ".join(errors))
    return out


def coerce(p: Param, value: Any) -> Any:
    """Return value as the Param's type, checked against its choices and range."""
    if p.type is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, not {value!r}")
    elif p.type in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"expected a number, not {value!r}")
        value = p.type(value)
        if (p.min is not None and value < p.min) or (p.max is not None and value > p.max):
            raise ValueError(f"{value} is outside {p.min}..{p.max}")
    elif p.type is list:
        if not isinstance(value, list):
            raise ValueError("expected a list")
    elif p.type is dict:
        if not isinstance(value, dict):
            raise ValueError("expected an object")
    else:
        value = p.type(value)
    if p.choices:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if v not in p.choices]
        if bad:
            raise ValueError(
                f"{', '.join(map(str, bad))} not one of {', '.join(map(str, p.choices))}"
            )
    return value
