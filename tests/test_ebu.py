"""EBU conformance of the engine's meter: EBU Tech 3341 (2016/2023) and Tech 3342 test cases.

The signals are synthesised as the specifications describe them (1 kHz sine, stereo 48 kHz
unless a case says otherwise; a sine's level in dBFS is its peak). Tolerances are the
specifications': integrated, momentary and short-term loudness +-0.1 LU, loudness range
+-1 LU, true peak +0.2/-0.4 dB. Momentary and short-term cases are read through report.py,
which gets them from the same ebur128 frame log a processing pass can produce.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from media_jobs.engine import measure, pipeline, process
from media_jobs.engine.report import detailed_loudness, parse_frame_line
from tests.media import ffmpeg

RATE = 48000
LOUDNESS_TOLERANCE = 0.1
LRA_TOLERANCE = 1.0
PEAK_ABOVE, PEAK_BELOW = 0.2, 0.4
# Fade true-peak signals in and out: an abrupt start rings in the meter's oversampling filter.
FADE = 0.05
# Seconds after which the specifications expect momentary (case 12) and short-term (case 9)
# loudness to hold constant: the 400 ms and 3 s windows are full by then.
MOMENTARY_SETTLED = 1.0
SHORTTERM_SETTLED = 3.0


@dataclasses.dataclass(frozen=True)
class Tone:
    """A 1 kHz sine whose level (dBFS peak) steps through segments of given lengths."""

    segments: tuple[tuple[float, float], ...]  # (level dBFS, seconds)
    layout: str = "stereo"
    gains: tuple[float, ...] = (0.0, 0.0)  # per channel, dB

    def write(self, path: Path) -> Path:
        """Write the tone as a float WAV."""
        ends, level_at = 0.0, []
        for level, seconds in self.segments:
            ends += seconds
            level_at.append((ends, 10 ** (level / 20)))
        # if(lt(t,end1),a1,if(lt(t,end2),a2,...)): a sample-exact envelope at 48 kHz.
        envelope = f"{level_at[-1][1]:.12g}"
        for end, amplitude in reversed(level_at[:-1]):
            envelope = f"if(lt(t,{end:.6f}),{amplitude:.12g},{envelope})"
        channels = "|".join(
            f"{10 ** (gain / 20):.12g}*{envelope}*sin(2*PI*1000*t)" for gain in self.gains
        )
        source = f"aevalsrc='{channels}':s={RATE}:c={self.layout}:d={ends:.6f}"
        ffmpeg("-f", "lavfi", "-i", source, "-c:a", "pcm_f32le", str(path))
        return path


@dataclasses.dataclass(frozen=True)
class PeakTone:
    """A stereo sine at a fraction of the sample rate, starting at a phase, faded in and out."""

    fraction: float  # of the sample rate
    phase: float  # degrees
    true_peak: float  # dBTP, the sine's amplitude
    seconds: float = 2.0
    rate: int = RATE

    def write(self, path: Path) -> Path:
        """Write the tone as a float WAV."""
        amplitude = 10 ** (self.true_peak / 20)
        frequency, phase = self.rate * self.fraction, math.radians(self.phase)
        sine = f"{amplitude:.12g}*sin(2*PI*{frequency:.12g}*t+{phase:.12g})"
        fades = f"afade=t=in:d={FADE},afade=t=out:st={self.seconds - FADE}:d={FADE}"
        source = f"aevalsrc='{sine}|{sine}':s={self.rate}:d={self.seconds}"
        ffmpeg("-f", "lavfi", "-i", source, "-af", fades, "-c:a", "pcm_f32le", str(path))
        return path


@dataclasses.dataclass(frozen=True)
class Expect:
    """What a case must measure; None: not part of the case."""

    integrated: float | None = None
    lra: float | None = None
    true_peak: float | None = None
    momentary: float | None = None  # max, and constant after MOMENTARY_SETTLED
    shortterm: float | None = None  # max, and constant after SHORTTERM_SETTLED


def _sine(level: float, seconds: float) -> Tone:
    """Return a steady tone."""
    return Tone(((level, seconds),))


def _steps(*segments: tuple[float, float]) -> Tone:
    """Return a tone stepping through (level dBFS, seconds) segments."""
    return Tone(tuple(segments))


def _alternating(high: float, low: float, on: float, off: float, seconds: float) -> Tone:
    """Return a tone alternating between two levels, on seconds high then off seconds low."""
    cycles = round(seconds / (on + off))
    return Tone(tuple(segment for _ in range(cycles) for segment in ((high, on), (low, off))))


# Tech 3341 Table 1 and Tech 3342 Table 1; the numbered programme files (3341 cases 7, 8,
# 10, 11, 13, 14, 20-23; 3342 cases 5, 6) are recordings, not synthesisable.
CASES = [
    pytest.param(_sine(-23, 20), Expect(-23.0, momentary=-23.0, shortterm=-23.0),
                 id="tech3341-case01"),
    pytest.param(_sine(-33, 20), Expect(-33.0, momentary=-33.0, shortterm=-33.0),
                 id="tech3341-case02"),
    pytest.param(_steps((-36, 10), (-23, 60), (-36, 10)), Expect(-23.0), id="tech3341-case03"),
    pytest.param(_steps((-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)), Expect(-23.0),
                 id="tech3341-case04"),
    pytest.param(_steps((-26, 20), (-20, 20.1), (-26, 20)), Expect(-23.0), id="tech3341-case05"),
    # 5.0 (L, R, C, Ls, Rs): the surround channels count +1.5 dB (weight 1.41).
    pytest.param(Tone(((0, 20),), layout="5.0", gains=(-28, -28, -24, -30, -30)), Expect(-23.0),
                 id="tech3341-case06"),
    # 1.34 s at -20 dBFS, 1.66 s at -30 dBFS: every 3 s window holds one period.
    pytest.param(_alternating(-20, -30, 1.34, 1.66, 21), Expect(shortterm=-23.0),
                 id="tech3341-case09"),
    # 0.18 s at -20 dBFS, 0.22 s at -30 dBFS: every 400 ms window holds one period.
    pytest.param(_alternating(-20, -30, 0.18, 0.22, 10), Expect(momentary=-23.0),
                 id="tech3341-case12"),
    pytest.param(PeakTone(1 / 4, 0, -6.0), Expect(true_peak=-6.0), id="tech3341-case15"),
    pytest.param(PeakTone(1 / 4, 45, -6.0), Expect(true_peak=-6.0), id="tech3341-case16"),
    pytest.param(PeakTone(1 / 6, 60, -6.0), Expect(true_peak=-6.0), id="tech3341-case17"),
    pytest.param(PeakTone(1 / 8, 67.5, -6.0), Expect(true_peak=-6.0), id="tech3341-case18"),
    # Samples at 0 dBFS, true peak 3 dB above them.
    pytest.param(PeakTone(1 / 4, 45, 20 * math.log10(math.sqrt(2))), Expect(true_peak=3.0),
                 id="tech3341-case19"),
    pytest.param(_steps((-20, 20), (-30, 20)), Expect(lra=10), id="tech3342-case01"),
    pytest.param(_steps((-20, 20), (-15, 20)), Expect(lra=5), id="tech3342-case02"),
    pytest.param(_steps((-40, 20), (-20, 20)), Expect(lra=20), id="tech3342-case03"),
    pytest.param(_steps((-50, 20), (-35, 20), (-20, 20), (-35, 20), (-50, 20)), Expect(lra=15),
                 id="tech3342-case04"),
]  # fmt: skip


@pytest.mark.parametrize(("signal", "expect"), CASES)
def test_ebu_case(signal: Tone | PeakTone, expect: Expect, tmp_path: Path) -> None:
    path = signal.write(tmp_path / "case.wav")
    if expect.integrated is not None or expect.lra is not None or expect.true_peak is not None:
        measured = measure(path)
        if expect.integrated is not None:
            assert measured.integrated == pytest.approx(expect.integrated, abs=LOUDNESS_TOLERANCE)
        if expect.lra is not None:
            assert measured.lra == pytest.approx(expect.lra, abs=LRA_TOLERANCE)
        if expect.true_peak is not None:
            assert expect.true_peak - PEAK_BELOW <= measured.true_peak
            assert measured.true_peak <= expect.true_peak + PEAK_ABOVE
    if expect.momentary is None and expect.shortterm is None and expect.true_peak is None:
        return

    # A job's report reads the same signal in its own pass (its true peak 4x oversampled).
    report = detailed_loudness(path)
    if expect.true_peak is not None:
        assert expect.true_peak - PEAK_BELOW <= report["true_peak"]
        assert report["true_peak"] <= expect.true_peak + PEAK_ABOVE
    if expect.momentary is None and expect.shortterm is None:
        return
    frames = _frames(path)
    if expect.momentary is not None:
        assert report["max_momentary"] == pytest.approx(expect.momentary, abs=LOUDNESS_TOLERANCE)
        settled = [m for t, m, _ in frames if t >= MOMENTARY_SETTLED]
        assert settled
        assert all(_near(m, expect.momentary) for m in settled), settled
    if expect.shortterm is not None:
        assert report["max_shortterm"] == pytest.approx(expect.shortterm, abs=LOUDNESS_TOLERANCE)
        settled = [s for t, _, s in frames if t >= SHORTTERM_SETTLED]
        assert settled
        assert all(_near(s, expect.shortterm) for s in settled), settled


def test_a_jobs_input_report_reads_the_true_peak_pass_1_only_estimates(tmp_path):
    # A tone at a quarter of the rate, 22.5 degrees off the samples: oversampling 2x (pass 1's
    # estimate) lands its points 22.5 degrees either side of the crest and reads 0.7 dB low;
    # 4x (BS.1770, the job's input report) lands on it.
    tone = PeakTone(1 / 4, 22.5, -6.0, seconds=5.0).write(tmp_path / "tone.wav")
    params = {
        "algorithms": {"normloudness": True, "loudnesstarget": -23, "filtering": False},
        "output_files": [{"format": "wav"}],
    }
    estimated = process(tone, params, tmp_path / "process").statistics["input"]["true_peak"]
    assert estimated < -6.4  # the case tells the two apart
    result = pipeline.run(tone, params, tmp_path / "job", waveform_image=False)
    assert result.statistics["input"]["true_peak"] == pytest.approx(-6.0, abs=0.2)
    assert measure(tone).true_peak == pytest.approx(-6.0, abs=0.2)


def test_a_report_reads_the_true_peak_of_a_high_rate_file(tmp_path):
    # At 96 kHz a tone at a quarter of the rate, 45 degrees off the samples, peaks 3 dB over
    # every sample: the report must still oversample it.
    tone = PeakTone(1 / 4, 45, -6.0, rate=96000).write(tmp_path / "tone96k.wav")
    report = detailed_loudness(tone)
    assert report["sample_rate"] == 96000
    assert -6.0 - PEAK_BELOW <= report["true_peak"] <= -6.0 + PEAK_ABOVE


def _near(value: float | None, expected: float) -> bool:
    """Return True when a frame's reading is within the loudness tolerance of expected."""
    return value is not None and abs(value - expected) <= LOUDNESS_TOLERANCE


def _frames(path: Path) -> list[tuple[float, float | None, float | None]]:
    """Return (t, M, S) of every 100 ms frame ebur128 logs for path."""
    stderr = ffmpeg("-i", str(path), "-af", "ebur128=framelog=info", "-f", "null", "-")
    frames = []
    for line in stderr.splitlines():
        frame = parse_frame_line(line)
        if frame is not None:
            frames.append((frame.t, frame.momentary, frame.shortterm))
    # Round away the frame clock's jitter (t: 2.999979 is the frame ending at 3 s).
    return [(round(t, 2), m, s) for t, m, s in frames]
