"""`manage.py process`: the engine on local files, one JSON document per file."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from media_jobs import samples
from tests.media import ebur128

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def two_wavs(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("process")
    return [
        samples.speech_like(d / "one.wav", seconds=5, gain_db=-26),
        samples.speech_like(d / "two.wav", seconds=4, gain_db=-14, channels=1),
    ]


def run(*args) -> tuple[list[dict], str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("process", *args, stdout=out, stderr=err)
    finally:
        docs = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return docs, err.getvalue()


def test_it_processes_each_file_and_prints_its_report(two_wavs, tmp_path):
    docs, _ = run(*map(str, two_wavs), "--preset", "podcast", "--output-dir", str(tmp_path))
    assert [d["input"] for d in docs] == [str(p) for p in two_wavs]
    for doc in docs:
        (out,) = doc["outputs"]
        path = Path(out["path"])
        assert path.parent == tmp_path and path.suffix == ".mp3"
        measured = ebur128(path)
        assert measured["integrated"] == pytest.approx(-16.0, abs=0.5)
        assert measured["true_peak"] <= -1.0
        assert out["statistics"]["integrated"] == pytest.approx(measured["integrated"], abs=0.2)
        assert doc["statistics"]["input"]["integrated"] < -20 or doc["input"].endswith("two.wav")


def test_it_applies_set_overrides(two_wavs, tmp_path):
    docs, _ = run(
        str(two_wavs[0]),
        "--preset",
        "podcast",
        "--set",
        "loudnesstarget=-20",
        "--set",
        'output_files=[{"format": "flac"}]',
        "--output-dir",
        str(tmp_path),
    )
    (out,) = docs[0]["outputs"]
    assert out["format"] == "flac"
    assert ebur128(Path(out["path"]))["integrated"] == pytest.approx(-20.0, abs=0.5)


def test_it_fails_clearly_on_an_unknown_preset(two_wavs):
    with pytest.raises(CommandError, match=r"Unknown preset 'nope'.*podcast"):
        run(str(two_wavs[0]), "--preset", "nope")


def test_it_fails_clearly_on_an_invalid_parameter(two_wavs):
    with pytest.raises(CommandError, match="loudnesstarget"):
        run(str(two_wavs[0]), "--preset", "podcast", "--set", "loudnesstarget=-50")
    with pytest.raises(CommandError, match="loudnesstarget"):
        run(str(two_wavs[0]), "--preset", "podcast", "--set", "loudnesstarget=loud")
    with pytest.raises(CommandError, match="key=value"):
        run(str(two_wavs[0]), "--preset", "podcast", "--set", "loudnesstarget")


def test_a_bad_file_fails_the_run_but_not_the_others(two_wavs, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 100)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 2 file"):
        call_command(
            "process",
            str(bad),
            str(two_wavs[0]),
            "--preset",
            "podcast",
            "--output-dir",
            str(tmp_path),
            stdout=out,
            stderr=err,
        )
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert "decode" in docs[0]["error"].lower() and "bad.wav" in err.getvalue()
    assert docs[1]["outputs"][0]["format"] == "mp3"


def test_it_refuses_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="No such file"):
        run(str(tmp_path / "nothing.wav"), "--preset", "podcast")
