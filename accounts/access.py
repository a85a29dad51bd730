"""Which workspaces a request may see, and with which role."""

from __future__ import annotations

from django.http import Http404

from accounts.models import ApiKey, Membership, Workspace
from accounts.roles import role_at_least, weaker_role


def workspace_roles(user, auth=None) -> dict[int, str]:
    """Return {workspace_id: role} for a user, narrowed to one workspace for an API key."""
    if user is None or not user.is_authenticated:
        return {}
    memberships = Membership.objects.filter(user=user)
    if isinstance(auth, ApiKey):
        m = memberships.filter(workspace_id=auth.workspace_id).first()
        # A key never grants more than its creator still holds.
        return {m.workspace_id: weaker_role(auth.role, m.role)} if m else {}
    return dict(memberships.values_list("workspace_id", "role"))


def request_roles(request) -> dict[int, str]:
    """Return the workspace roles of a request, cached on it."""
    cached = getattr(request, "_workspace_roles", None)
    if cached is None:
        cached = workspace_roles(request.user, getattr(request, "auth", None))
        request._workspace_roles = cached
    return cached


def role_in(request, workspace_id: int) -> str | None:
    """Return the caller's role in a workspace, or None when not a member."""
    return request_roles(request).get(workspace_id)


def require_role(request, workspace_id: int, needed: str) -> str:
    """Return the caller's role, raising 404 for outsiders (existence is not disclosed)."""
    role = role_in(request, workspace_id)
    if role is None:
        raise Http404
    if not role_at_least(role, needed):
        from rest_framework.exceptions import PermissionDenied

        raise PermissionDenied(f"Your role ({role}) may not do this; {needed} or higher is needed.")
    return role


def resolve_workspace(request, slug: str | None) -> Workspace:
    """Return the workspace named by slug, or the caller's only workspace when slug is empty."""
    roles = request_roles(request)
    if slug:
        ws = Workspace.objects.filter(slug=slug, id__in=roles.keys()).first()
        if ws is None:
            raise Http404
        return ws
    if len(roles) == 1:
        return Workspace.objects.get(id=next(iter(roles)))
    from rest_framework.exceptions import ValidationError

    raise ValidationError({"workspace": "Name the workspace (slug): you belong to several."})
