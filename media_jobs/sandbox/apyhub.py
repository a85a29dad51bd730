"""Emulator of the apyhub API (being written)."""

urlpatterns: list = []
