"""Join MP3s that LAME encoded from overlapping stretches of one programme into one file.

processing.py encodes a long programme in stretches on every core at once. Each stretch
after the first starts some seconds early (pre-roll) and each before the last ends some
seconds late (post-roll), its first sample on the whole programme's frame grid, so frame k
of every stretch covers the same samples as frame k of one encode of the whole would.
Within a few hundred milliseconds of the same input two LAME encoders reach the same state
and write byte-identical frames; a stretch is cut over to the next at a frame J where the
two agree on frames J-2..J: the bit reservoir bytes frame J and later reach back into (at
most 511, under two frames) are then the same in both, so the joined stream decodes to
exactly the first stretch's audio before J and the second's from J, with no seam. Where no
such run exists (it is rare) the cut goes where the second stream's reservoir reach fits in
the room the first leaves (the bytes it held for its own frame J), and those bytes are
overwritten with what the second stream's frame J reads: a valid stream whose seam differs
from either encode only by one granule's quantisation.

The first stretch's Xing/Info frame becomes the joined file's, with LAME's tag rewritten:
frame and byte counts, seek table, end padding (the last stretch's) and both CRCs, the
music CRC combined from the stretches' own without reading the audio again.
"""

from __future__ import annotations

import dataclasses
import shutil
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from .errors import EngineError

# MPEG audio layer III: bitrates (kbps) by MPEG version and index, sample rates by version.
_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_CHUNK = 1024 * 1024
# Bytes of a frame's reservoir reach LAME can use (9 bits of main_data_begin).
_MAX_RESERVOIR = 511
# Frames a cut needs identical in both encodes: J-2, J-1 and J.
_SAME_RUN = 3
_TOC_SIZE = 100
_LAME_TAG_SIZE = 36
_TAG_CRC_SPAN = 190


def frame_samples(rate: int) -> int:
    """Return the samples in one layer III frame at rate (MPEG-1 above 24 kHz, else 2/2.5)."""
    return 1152 if rate >= 32000 else 576


@dataclasses.dataclass
class _Header:
    """What a layer III frame header says."""

    size: int  # bytes, header included
    side_info: int  # offset of main_data_begin from the frame start (after header and CRC)
    mpeg1: bool


def _header(word: int) -> _Header | None:
    """Return the parsed 32-bit frame header, or None when word is not a layer III header."""
    if (word >> 21) & 0x7FF != 0x7FF:
        return None
    version, layer = (word >> 19) & 3, (word >> 17) & 3
    index, rate_index = (word >> 12) & 15, (word >> 10) & 3
    if layer != 1 or version == 1 or index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    rate = _RATES[version][rate_index]
    kbps = _BITRATES[1 if mpeg1 else 2][index]
    padding = (word >> 9) & 1
    size = (144 if mpeg1 else 72) * kbps * 1000 // rate + padding
    crc = 0 if (word >> 16) & 1 else 2
    return _Header(size=size, side_info=4 + crc, mpeg1=mpeg1)


def _reach(frame: bytes) -> int:
    """Return main_data_begin: how many bytes before its side info a frame's data starts."""
    header = _header(int.from_bytes(frame[:4], "big"))
    assert header is not None
    at = header.side_info
    if header.mpeg1:
        return int.from_bytes(frame[at : at + 2], "big") >> 7
    return frame[at]


@dataclasses.dataclass
class _Stream:
    """One encoded stretch: where its Info frame and each audio frame sit in its file."""

    path: Path
    first: int  # global index (on the programme's frame grid) of its first audio frame
    prefix: int  # bytes before the Info frame (an ID3v2 tag)
    info: bytes  # the Xing/Info frame
    offsets: array[int]  # file offset of every audio frame, then the end of the last
    music_crc: int
    padding: int

    @property
    def count(self) -> int:
        """Return the number of audio frames."""
        return len(self.offsets) - 1

    def local(self, frame: int) -> int:
        """Return the index in this stream of global frame."""
        return frame - self.first

    def read(self, handle: BinaryIO, frame: int) -> bytes:
        """Return the bytes of global frame."""
        k = self.local(frame)
        handle.seek(self.offsets[k])
        return handle.read(self.offsets[k + 1] - self.offsets[k])


def _scan(path: Path, first: int) -> _Stream:
    """Index an encoded stretch's frames, reading it in chunks (never whole)."""
    offsets = array("Q")
    end = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(10)
        prefix = 0
        if head[:3] == b"ID3":
            size = head[6:10]
            prefix = 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])
        position = base = prefix
        buffer = b""
        while position + 4 <= end:
            at = position - base
            if at + 4 > len(buffer):
                handle.seek(position)
                buffer, base, at = handle.read(_CHUNK), position, 0
            header = _header(int.from_bytes(buffer[at : at + 4], "big"))
            if header is None:
                break  # a trailing tag (or damage): the frames end here
            offsets.append(position)
            position += header.size
        if len(offsets) < 2:
            raise EngineError(f"{path.name} holds no MP3 audio frames.")
        offsets.append(min(position, end))
        handle.seek(offsets[0])
        info = handle.read(offsets[1] - offsets[0])
    tag = _tag_offset(info)
    if tag is None:
        raise EngineError(f"{path.name} has no Xing/Info frame to rewrite.")
    fields = _lame_fields(info)
    del offsets[0]  # the Info frame carries no audio
    return _Stream(
        path=path,
        first=first,
        prefix=prefix,
        info=info,
        offsets=offsets,
        music_crc=int.from_bytes(info[fields + 32 : fields + 34], "big"),
        padding=int.from_bytes(info[fields + 21 : fields + 24], "big") & 0xFFF,
    )


def _tag_offset(info: bytes) -> int | None:
    """Return where "Xing" or "Info" starts in an Info frame."""
    for magic in (b"Xing", b"Info"):
        at = info.find(magic, 0, 64)
        if at >= 0:
            return at
    return None


def _xing_layout(info: bytes) -> dict[str, int]:
    """Return the offsets of the Xing fields present (frames, bytes, toc, quality, lame)."""
    at = _tag_offset(info)
    assert at is not None
    flags = int.from_bytes(info[at + 4 : at + 8], "big")
    cursor = at + 8
    layout: dict[str, int] = {}
    for bit, name, size in (
        (1, "frames", 4),
        (2, "bytes", 4),
        (4, "toc", _TOC_SIZE),
        (8, "quality", 4),
    ):
        if flags & bit:
            layout[name] = cursor
            cursor += size
    layout["lame"] = cursor
    return layout


def _lame_fields(info: bytes) -> int:
    """Return where LAME's tag (its 9-byte version string first) starts in an Info frame."""
    lame = _xing_layout(info)["lame"]
    if len(info) < lame + _LAME_TAG_SIZE:
        raise EngineError("The MP3's Info frame carries no LAME tag.")
    return lame


@dataclasses.dataclass
class _Cut:
    """Where the joined stream switches from one stretch to the next."""

    frame: int  # global index of the first frame taken from the later stretch
    patch: bytes  # reservoir bytes to write just before that frame ("" when exact)


def _find_cut(
    a: _Stream, b: _Stream, around: int, handles: tuple[BinaryIO, BinaryIO], *, exact: bool = True
) -> _Cut:
    """Return the cut from stream a to stream b nearest global frame around.

    exact=False skips the search for identical frames (the fallback's tests use it).
    """
    low = b.first + _SAME_RUN + 8  # give b's encoder a few frames to settle
    high = a.first + a.count - 1
    if low >= high:
        raise EngineError("The encoded stretches do not overlap enough to be joined.")
    order = sorted(range(low, high), key=lambda frame: (abs(frame - around), frame))
    cache: dict[tuple[int, int], bytes] = {}

    def frame_of(stream: int, frame: int) -> bytes:
        key = (stream, frame)
        if key not in cache:
            cache[key] = (a, b)[stream].read(handles[stream], frame)
        return cache[key]

    for frame in order if exact else ():
        if all(frame_of(0, k) == frame_of(1, k) for k in range(frame - _SAME_RUN + 1, frame + 1)):
            return _Cut(frame=frame, patch=b"")
    for frame in order:
        reach_b = _reach(frame_of(1, frame))
        if reach_b <= _reach(frame_of(0, frame)):
            return _Cut(frame=frame, patch=_reservoir(b, handles[1], frame, reach_b))
    raise EngineError("No frame was found where the encoded stretches can be joined.")


def _reservoir(stream: _Stream, handle: BinaryIO, frame: int, reach: int) -> bytes:
    """Return the reach bytes of main data that precede global frame's side info in stream."""
    out = b""
    k = frame - 1
    while len(out) < reach and k >= stream.first:
        data = stream.read(handle, k)
        header = _header(int.from_bytes(data[:4], "big"))
        assert header is not None
        payload = data[header.side_info + _side_info_size(data) :]
        out = payload + out
        k -= 1
    if len(out) < reach:
        raise EngineError("An encoded stretch's bit reservoir reaches past its start.")
    return out[len(out) - reach :] if reach else b""


def _side_info_size(frame: bytes) -> int:
    """Return the side info's length in bytes (by MPEG version and channel mode)."""
    word = int.from_bytes(frame[:4], "big")
    mpeg1 = (word >> 19) & 3 == 3
    mono = (word >> 6) & 3 == 3
    if mpeg1:
        return 17 if mono else 32
    return 9 if mono else 17


def join(
    parts: Sequence[tuple[Path, int]], cuts_at: Sequence[int], out: Path, *, exact: bool = True
) -> list[int]:
    """Join encoded stretches into out and return the global frame of each cut.

    parts: each stretch's file and the global frame index of its first audio frame; cuts_at:
    for each pair of neighbours, the global frame near which to cut (the stretches' shared
    boundary).
    """
    streams = [_scan(path, first) for path, first in parts]
    cuts: list[_Cut] = []
    for index, around in enumerate(cuts_at):
        a, b = streams[index], streams[index + 1]
        with a.path.open("rb") as first, b.path.open("rb") as second:
            cuts.append(_find_cut(a, b, around, (first, second), exact=exact))
    starts = [streams[0].first, *(cut.frame for cut in cuts)]
    ends = [*(cut.frame for cut in cuts), streams[-1].first + streams[-1].count]

    lead = streams[0]
    crc = 0
    positions = array("Q")  # output offset of every written audio frame, for the seek table
    with out.open("w+b") as target:
        with lead.path.open("rb") as handle:
            shutil.copyfileobj(_Range(handle, 0, lead.prefix), target)
        info_at = target.tell()
        target.write(lead.info)  # rewritten below, once the counts are known
        for index, stream in enumerate(streams):
            low, high = stream.local(starts[index]), stream.local(ends[index])
            begin, end = stream.offsets[low], stream.offsets[high]
            shift = target.tell() - begin
            positions.extend(offset + shift for offset in stream.offsets[low:high])
            with stream.path.open("rb") as handle:
                shutil.copyfileobj(_Range(handle, begin, end - begin), target)
                part_crc = _part_crc(stream, handle, low, high)
            if index and cuts[index - 1].patch:
                first_frame = len(positions) - (high - low)
                crc ^= _patch(target, positions, first_frame, cuts[index - 1].patch)
            crc = _crc_concat(crc, part_crc, end - begin)
        total = target.tell() - info_at
        target.seek(info_at)
        target.write(_rewrite_info(lead, streams[-1], positions, info_at, total, crc))
    return [cut.frame for cut in cuts]


class _Range:
    """A file-like view of length bytes of handle from offset (for shutil.copyfileobj)."""

    def __init__(self, handle: BinaryIO, offset: int, length: int) -> None:
        handle.seek(offset)
        self.handle = handle
        self.left = length

    def read(self, size: int = -1) -> bytes:
        """Return up to size bytes of the range."""
        if self.left <= 0:
            return b""
        size = self.left if size < 0 else min(size, self.left)
        data = self.handle.read(size)
        self.left -= len(data)
        return data


def _part_crc(stream: _Stream, handle: BinaryIO, low: int, high: int) -> int:
    """Return the CRC-16 of the stream's audio frames [low, high), from its music CRC.

    The music CRC covers every audio frame: the frames before low (pre-roll) and from high
    (post-roll) are read and taken out, so the kept hours are never read again.
    """
    offsets = stream.offsets
    handle.seek(offsets[0])
    before = _crc16(handle.read(offsets[low] - offsets[0]))
    handle.seek(offsets[high])
    after_size = offsets[-1] - offsets[high]
    after = _crc16(handle.read(after_size))
    kept = offsets[high] - offsets[low]
    # music = shift(before, kept + after) ^ shift(kept_crc, after) ^ after
    value = stream.music_crc ^ after ^ _shift(before, kept + after_size)
    return _unshift(value, after_size)


def _patch(target: BinaryIO, positions: array[int], cut: int, patch: bytes) -> int:
    """Write a cut's reservoir bytes into the main data just before frame cut.

    Returns the change to the CRC of everything written before the cut (CRC-16 with a zero
    start and no final xor is linear: the change is the CRC of the xor of old and new bytes,
    shifted by the bytes that follow them up to the cut).
    """
    end_of_part = target.tell()
    cut_at = positions[cut]
    need = len(patch)
    change = 0
    k = cut - 1
    while need > 0 and k >= 0:
        start, end = positions[k], positions[k + 1]
        target.seek(start)
        frame = target.read(end - start)
        header = _header(int.from_bytes(frame[:4], "big"))
        assert header is not None
        room = end - (start + header.side_info + _side_info_size(frame))
        take = min(room, need)
        at = end - take
        new = patch[need - take : need]
        old = frame[len(frame) - take :]
        target.seek(at)
        target.write(new)
        diff = bytes(x ^ y for x, y in zip(old, new, strict=True))
        change ^= _shift(_crc16(diff), cut_at - end)
        need -= take
        k -= 1
    target.seek(end_of_part)
    return change


def _rewrite_info(
    lead: _Stream, last: _Stream, positions: array[int], info_at: int, total: int, crc: int
) -> bytes:
    """Return the lead stretch's Info frame with the joined file's counts, table and CRCs."""
    info = bytearray(lead.info)
    layout = _xing_layout(lead.info)
    frames = len(positions)
    if "frames" in layout:
        info[layout["frames"] : layout["frames"] + 4] = frames.to_bytes(4, "big")
    if "bytes" in layout:
        info[layout["bytes"] : layout["bytes"] + 4] = total.to_bytes(4, "big")
    if "toc" in layout:
        toc = bytearray(_TOC_SIZE)
        for i in range(1, _TOC_SIZE):
            at = positions[min(frames - 1, i * frames // _TOC_SIZE)] - info_at
            toc[i] = min(255, 256 * at // total)
        info[layout["toc"] : layout["toc"] + _TOC_SIZE] = toc
    lame = layout["lame"]
    delay = int.from_bytes(info[lame + 21 : lame + 24], "big") >> 12
    info[lame + 21 : lame + 24] = ((delay << 12) | last.padding).to_bytes(3, "big")
    info[lame + 28 : lame + 32] = total.to_bytes(4, "big")
    info[lame + 32 : lame + 34] = crc.to_bytes(2, "big")
    tag_crc = _crc16(bytes(info[:_TAG_CRC_SPAN]))
    info[lame + 34 : lame + 36] = tag_crc.to_bytes(2, "big")
    return bytes(info)


# CRC-16/ARC (reflected 0x8005, zero start, no final xor), as LAME's tag and ffmpeg use it.
_POLY = 0xA001


def _table() -> list[int]:
    """Return the byte-at-a-time table."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def _crc16(data: bytes, crc: int = 0) -> int:
    """Return the CRC-16 of data (for short stretches only: pure Python)."""
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


# The CRC register after a zero byte is a linear map of the register before it: a 16x16
# matrix over GF(2), kept as its 16 columns. Powers of it append (or, inverted, remove)
# runs of zero bytes, which is how CRCs of concatenations combine (zlib's crc32_combine).
def _times(matrix: Sequence[int], vector: int) -> int:
    """Return matrix applied to vector."""
    out = 0
    column = 0
    while vector:
        if vector & 1:
            out ^= matrix[column]
        vector >>= 1
        column += 1
    return out


def _compose(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Return the matrix a after b."""
    return [_times(a, column) for column in b]


def _zero_byte() -> list[int]:
    """Return the map of one zero byte through the register."""
    bit = [_POLY] + [1 << (n - 1) for n in range(1, 16)]
    matrix = bit
    for _ in range(7):
        matrix = _compose(bit, matrix)
    return matrix


def _invert(matrix: Sequence[int]) -> list[int]:
    """Return the inverse of an invertible 16x16 GF(2) matrix (Gauss-Jordan on its rows)."""
    rows = [sum(((matrix[c] >> r) & 1) << c for c in range(16)) for r in range(16)]
    inverse = [1 << r for r in range(16)]
    for col in range(16):
        pivot = next(r for r in range(col, 16) if (rows[r] >> col) & 1)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inverse[col], inverse[pivot] = inverse[pivot], inverse[col]
        for r in range(16):
            if r != col and (rows[r] >> col) & 1:
                rows[r] ^= rows[col]
                inverse[r] ^= inverse[col]
    return [sum(((inverse[r] >> c) & 1) << r for r in range(16)) for c in range(16)]


_ZERO = _zero_byte()
_UNZERO = _invert(_ZERO)


def _power_apply(base: list[int], count: int, vector: int) -> int:
    """Return base**count applied to vector (by squaring)."""
    matrix = base
    while count:
        if count & 1:
            vector = _times(matrix, vector)
        count >>= 1
        if count:
            matrix = _compose(matrix, matrix)
    return vector


def _shift(crc: int, zeros: int) -> int:
    """Return the register after feeding zeros zero bytes."""
    return _power_apply(_ZERO, zeros, crc)


def _unshift(crc: int, zeros: int) -> int:
    """Return the register that zeros zero bytes would have turned into crc."""
    return _power_apply(_UNZERO, zeros, crc)


def _crc_concat(crc_a: int, crc_b: int, size_b: int) -> int:
    """Return the CRC of a + b from theirs and b's length."""
    return _shift(crc_a, size_b) ^ crc_b
