"""Emulator of the audioscrape API (being written)."""

urlpatterns: list = []
