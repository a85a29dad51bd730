"""Emulator of the respeecher API (being written)."""

urlpatterns: list = []
