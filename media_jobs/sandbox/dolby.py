"""Emulator of the dolby API (being written)."""

urlpatterns: list = []
