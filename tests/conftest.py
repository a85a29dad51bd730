"""Shared test fixtures: alice (owner), bob (member of the same workspace), charlie (outsider)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
from django_q.conf import Conf
from rest_framework.test import APIClient

from accounts.models import Membership, User, Workspace
from accounts.roles import Role
from accounts.services import api_key_create, workspace_create


@dataclass
class Person:
    user: User
    key: str
    api: APIClient


def _person(email: str, workspace: Workspace, role: str) -> Person:
    user = User.objects.filter(email=email).first() or User.objects.create_user(
        email=email, password="pw-" + email
    )
    if not Membership.objects.filter(user=user, workspace=workspace).exists():
        Membership.objects.create(user=user, workspace=workspace, role=role)
    _, raw = api_key_create(workspace=workspace, user=user, role=role)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return Person(user, raw, api)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Give every test its own local storage directory."""
    root = tmp_path / "media"
    settings.MEDIA_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return root


@pytest.fixture
def acme(db) -> Workspace:
    owner = User.objects.create_user(email="alice@example.com", password="pw-alice@example.com")
    return workspace_create(name="Acme", owner=owner, slug="acme")


@pytest.fixture
def alice(acme) -> Person:
    return _person("alice@example.com", acme, Role.OWNER)


@pytest.fixture
def bob(acme) -> Person:
    return _person("bob@example.com", acme, Role.MEMBER)


@pytest.fixture
def victor(acme) -> Person:
    """A viewer in alice's workspace: may read, may not write."""
    return _person("victor@example.com", acme, Role.VIEWER)


@pytest.fixture
def charlie(db) -> Person:
    user = User.objects.create_user(email="charlie@example.com", password="pw-charlie@example.com")
    ws = workspace_create(name="Other", owner=user, slug="other")
    return _person("charlie@example.com", ws, Role.OWNER)


@pytest.fixture
def run_tasks_inline(monkeypatch):
    """Make django-q2 run queued tasks synchronously (its sync mode) once transactions commit."""
    monkeypatch.setattr(Conf, "SYNC", True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sandbox(live_server, settings, run_tasks_inline):
    """The provider emulators on a live server, with every provider pointed at them."""
    from media_jobs.sandbox.base import EMULATORS
    from tests.remote import start_sandbox

    box = start_sandbox(live_server.url, settings)
    yield box
    for emu in EMULATORS.values():
        emu.reset()
