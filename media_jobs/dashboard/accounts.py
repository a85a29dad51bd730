"""Dashboard pages for provider accounts: connect (keys or OAuth2), test, disconnect."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from media_jobs import connections
from media_jobs.dashboard.views import get_membership, render_page, require_manage
from media_jobs.models import ProviderAccount
from media_jobs.providers import PROVIDERS, get_provider
from media_jobs.providers.base import ProviderError


def remote_kinds() -> list[str]:
    return [kind for kind in PROVIDERS if not get_provider(kind).inline]


def credentials_form(kind: str, data=None) -> forms.Form:
    """Return a form for one provider's credential fields, derived from its declaration."""
    provider = get_provider(kind)
    fields: dict[str, forms.Field] = {
        "label": forms.CharField(required=False, max_length=100, label="Label")
    }
    for f in provider.credential_fields:
        widget = forms.PasswordInput(render_value=False) if f.secret else forms.TextInput()
        fields[f.name] = forms.CharField(
            label=f.label, required=f.required, help_text=f.help, widget=widget
        )
    form_class = type(f"{kind.title()}CredentialsForm", (forms.Form,), fields)
    return form_class(data, prefix=kind)


def provider_cards(forms_by_kind: dict[str, forms.Form] | None = None) -> list[dict]:
    cards = []
    for kind in remote_kinds():
        provider = get_provider(kind)
        typed = [a for a in provider.auth_kinds if a != ProviderAccount.AuthKind.OAUTH2_CODE]
        cards.append(
            {
                "kind": kind,
                "label": provider.label,
                "oauth": ProviderAccount.AuthKind.OAUTH2_CODE in provider.auth_kinds,
                "form": (forms_by_kind or {}).get(kind) or credentials_form(kind)
                if typed
                else None,
            }
        )
    return cards


@login_required
def accounts(request: HttpRequest, slug: str) -> HttpResponse:
    """List the workspace's provider accounts; admins connect, test and disconnect them."""
    m = get_membership(request, slug)
    return accounts_page(request, m)


def accounts_page(request, m, *, forms_by_kind=None, status: int = 200) -> HttpResponse:
    context = {
        "accounts": m.workspace.provider_accounts.order_by("provider", "pk"),
        "cards": provider_cards(forms_by_kind),
    }
    return render_page(request, "dashboard/accounts.html", context, membership=m, status=status)


@login_required
@require_POST
def account_add(request: HttpRequest, slug: str, kind: str) -> HttpResponse:
    """Connect an account with typed-in credentials, checked with the provider first."""
    m = get_membership(request, slug)
    require_manage(m)
    if kind not in remote_kinds():
        return redirect("dashboard:accounts", slug=slug)
    form = credentials_form(kind, request.POST)
    if not form.is_valid():
        return accounts_page(request, m, forms_by_kind={kind: form}, status=400)
    data = dict(form.cleaned_data)
    label = data.pop("label", "")
    try:
        account = connections.account_create(
            workspace=m.workspace, provider=kind, credentials=data, label=label
        )
    except connections.AccountError as exc:
        form.add_error(None, str(exc))
        return accounts_page(request, m, forms_by_kind={kind: form}, status=400)
    try:
        identity = connections.account_test(account=account)
    except ProviderError as exc:
        account.delete()
        form.add_error(None, f"The provider refused these credentials: {exc.message}")
        return accounts_page(request, m, forms_by_kind={kind: form}, status=400)
    messages.success(request, f"Connected {account.label} ({identity}).")
    return redirect("dashboard:accounts", slug=slug)


@login_required
@require_POST
def account_test(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Check an account with its provider now."""
    m = get_membership(request, slug)
    account = get_object_or_404(m.workspace.provider_accounts, pk=pk)
    require_manage(m)
    try:
        identity = connections.account_test(account=account)
    except ProviderError as exc:
        messages.error(request, f"{account.label}: {exc.message}")
    else:
        messages.success(request, f"{account.label} works ({identity}).")
    return redirect("dashboard:accounts", slug=slug)


@login_required
@require_POST
def account_disconnect(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Forget an account and its secrets."""
    m = get_membership(request, slug)
    account = get_object_or_404(m.workspace.provider_accounts, pk=pk)
    require_manage(m)
    connections.account_disconnect(account=account)
    messages.success(request, f"Disconnected {account.label}.")
    return redirect("dashboard:accounts", slug=slug)
