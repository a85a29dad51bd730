"""Account pages: accepting an invitation, and the health check."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import Http404, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect

from accounts import services
from accounts.models import Invitation


@login_required
def accept_invitation(request, token: str):
    """Join the workspace an invitation link names (signed in with the invited address)."""
    invitation = Invitation.find(token)
    if invitation is None:
        raise Http404("This invitation is unknown, used or expired.")
    try:
        services.invitation_accept(invitation=invitation, user=request.user)
    except PermissionError as exc:
        return HttpResponseForbidden(str(exc))
    messages.success(request, f"You joined {invitation.workspace.name}.")
    return redirect("dashboard:workspace", slug=invitation.workspace.slug)


def healthz(request):
    """Answer 200 when the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})
