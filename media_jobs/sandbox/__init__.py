"""Offline emulators of each remote provider's documented API (tests and demos).

Each emulator is strict about auth headers, required fields and content types, answers with the
documented shapes, status progressions and error codes, and does the real processing with the
built-in engine. They can be told to misbehave through `POST /sandbox/<kind>/_control`.
"""
