"""Benchmark the built-in engine against hand-written ffmpeg pipelines: `python -m bench`."""
