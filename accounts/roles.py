"""Workspace roles and what each may do."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


# Higher rank includes everything a lower rank may do.
RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def role_at_least(role: str, needed: str) -> bool:
    """Return whether `role` includes the permissions of `needed`."""
    return RANK[Role(role)] >= RANK[Role(needed)]


def weaker_role(a: str, b: str) -> str:
    """Return the less powerful of two roles."""
    return a if RANK[Role(a)] <= RANK[Role(b)] else b


def can_write(role: str) -> bool:
    """Return whether the role may create and run things (members and up)."""
    return role_at_least(role, Role.MEMBER)


def can_manage(role: str) -> bool:
    """Return whether the role may manage members, presets, keys and accounts."""
    return role_at_least(role, Role.ADMIN)
