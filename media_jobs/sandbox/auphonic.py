"""Emulator of the auphonic API (being written)."""

urlpatterns: list = []
