"""Print a new API key for a user in a workspace (and nothing else on stdout)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import services
from accounts.models import Membership, User, Workspace
from accounts.roles import Role


class Command(BaseCommand):
    help = "Create an API key for USER in WORKSPACE and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--email", required=True)
        parser.add_argument("--workspace", required=True, help="workspace slug")
        parser.add_argument("--role", default=Role.MEMBER, choices=[r.value for r in Role])
        parser.add_argument("--name", default="", help="a label for the key")
        parser.add_argument(
            "--create", action="store_true", help="create the user and workspace when missing"
        )

    @transaction.atomic
    def handle(self, *args, email: str, workspace: str, role: str, name: str, create: bool, **kw):
        email = email.strip().lower()
        user = User.objects.filter(email=email).first()
        if user is None:
            if not create:
                raise CommandError(f"No user {email}; pass --create to make one.")
            user = User.objects.create_user(email=email)
            user.set_unusable_password()
            user.save()
        ws = Workspace.objects.filter(slug=workspace).first()
        if ws is None:
            if not create:
                raise CommandError(f"No workspace {workspace!r}; pass --create to make one.")
            ws = services.workspace_create(name=workspace, owner=user, slug=workspace)
        membership = Membership.objects.filter(user=user, workspace=ws).first()
        if membership is None:
            if not create:
                raise CommandError(f"{email} is not a member of {workspace}.")
            membership = Membership.objects.create(user=user, workspace=ws, role=role)
        _, raw = services.api_key_create(workspace=ws, user=user, role=role, name=name)
        self.stdout.write(raw)
