"""Workflows for workspaces, memberships, invitations and API keys."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiKey, Invitation, Membership, User, Workspace
from accounts.roles import Role


@transaction.atomic
def workspace_create(*, name: str, owner: User, slug: str | None = None) -> Workspace:
    """Create a workspace owned by `owner`, with its `inbox` dataset."""
    from media_jobs.models import Dataset

    ws = Workspace.objects.create(name=name, slug=slug or Workspace.unique_slug(name))
    Membership.objects.create(user=owner, workspace=ws, role=Role.OWNER)
    Dataset.objects.create(workspace=ws, name="inbox", description="Default dataset for new media.")
    return ws


def invitation_create(
    *, workspace: Workspace, email: str, role: str, invited_by: User
) -> tuple[Invitation, str]:
    """Create an invitation, email its link, and return it with the link."""
    if role == Role.OWNER:
        raise ValueError("Invite as admin, member or viewer; ownership is not given by link.")
    invitation, raw = Invitation.new(
        workspace=workspace, email=email.lower(), role=role, invited_by=invited_by
    )
    invitation.save()
    link = settings.SITE_URL + reverse("accept_invitation", args=[raw])
    send_mail(
        subject=f"You are invited to {workspace.name}",
        message=f"{invited_by} invited you to join {workspace.name} as {role}.\n\n{link}\n",
        from_email=None,
        recipient_list=[invitation.email],
    )
    return invitation, link


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    """Add the user to the invitation's workspace (keeping a stronger existing role)."""
    if invitation.email.lower() != user.email.lower():
        raise PermissionError("This invitation was sent to another email address.")
    membership, _ = Membership.objects.get_or_create(
        user=user, workspace=invitation.workspace, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at"])
    return membership


def api_key_create(
    *, workspace: Workspace, user: User, role: str = Role.MEMBER, name: str = ""
) -> tuple[ApiKey, str]:
    """Create an API key and return it with the raw secret, which is shown only once."""
    key, raw = ApiKey.new(workspace=workspace, user=user, role=role, name=name)
    key.save()
    return key, raw


def api_key_revoke(*, key: ApiKey) -> None:
    """Revoke a key; it stops working at once."""
    ApiKey.objects.filter(pk=key.pk, revoked_at=None).update(revoked_at=timezone.now())


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Remove a member and revoke their keys there; refuse to remove the last owner."""
    # Lock the owners' rows so two owners can't remove each other at the same moment.
    owners = list(
        Membership.objects.select_for_update()
        .filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if membership.role == Role.OWNER and owners == [membership.pk]:
        raise ValueError("A workspace needs an owner: this is the last one.")
    # Their keys would wake up again if they were re-invited: revoke them now.
    ApiKey.objects.filter(
        workspace_id=membership.workspace_id, user_id=membership.user_id, revoked_at=None
    ).update(revoked_at=timezone.now())
    membership.delete()
