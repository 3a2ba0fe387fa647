"""What a file is, from its first 64 bytes: audio containers and common impostors.

``sniff(head)`` names the container (``"wav"``, ``"flac"``, ``"mp4"`` ...) or,
for things that are not audio, what they look like (``"a PNG image"``).
``check(head, ext)`` says whether a file with extension ``ext`` may be queued:
its content must be audio; audio in a different container than its extension
says is accepted (decoders read the content, not the name).
"""

from __future__ import annotations

from dataclasses import dataclass

HEAD_BYTES = 64

#: Extension -> the containers it normally holds.
EXPECTED: dict[str, frozenset[str]] = {
    ".wav": frozenset({"wav"}), ".wave": frozenset({"wav"}),
    ".flac": frozenset({"flac", "id3"}),
    ".ogg": frozenset({"ogg", "opus"}), ".oga": frozenset({"ogg", "opus"}), ".opus": frozenset({"opus"}),
    ".mp3": frozenset({"mp3", "id3"}),
    ".m4a": frozenset({"mp4"}), ".mp4": frozenset({"mp4"}), ".m4b": frozenset({"mp4"}),
    ".aac": frozenset({"aac", "mp4", "id3"}),
    ".wma": frozenset({"asf"}),
    ".aif": frozenset({"aiff"}), ".aiff": frozenset({"aiff"}), ".aifc": frozenset({"aiff"}),
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(EXPECTED)

AUDIO_CONTAINERS = frozenset({"wav", "flac", "ogg", "opus", "mp3", "id3", "mp4", "aac", "asf", "aiff",
                              "caf", "au", "w64"})

_ASF_GUID = bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C")
_W64_GUID = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_IMAGE_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis", b"crx ")

# (prefix, what it looks like) for files that are not audio.
_NOT_AUDIO = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"Rar!", "a RAR archive"), (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"), (b"SQLite format 3\x00", "an SQLite database"),
    (b"MThd", "a MIDI file (notes, not audio)"), (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"\x93NUMPY", "a NumPy array"), (b"PAR1", "a Parquet file"),
)


def _mpeg_audio(b: bytes) -> bool:
    """An MPEG-1/2/2.5 layer I-III frame header at the start."""
    if len(b) < 4 or b[0] != 0xFF or (b[1] & 0xE0) != 0xE0:
        return False
    version, layer = (b[1] >> 3) & 3, (b[1] >> 1) & 3
    bitrate, rate = b[2] >> 4, (b[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate != 15 and rate != 3


def _adts(b: bytes) -> bool:
    """An AAC ADTS header (12-bit sync, layer 00, a valid sampling index)."""
    return len(b) >= 7 and b[0] == 0xFF and (b[1] & 0xF6) == 0xF0 and ((b[2] >> 2) & 0xF) < 13


def _looks_like_text(b: bytes) -> bool:
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end is still text
        if exc.start < len(b) - 3:
            return False
        text = b[:exc.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n\f" for c in text.lstrip("\ufeff"))


def sniff(head: bytes) -> str:
    """The container in ``head`` (see ``AUDIO_CONTAINERS``), else a description of what it looks like."""
    b = head[:HEAD_BYTES]
    if not b:
        return "an empty file"
    if b[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64"):
        form = b[8:12]
        if form == b"WAVE":
            return "wav"
        return {b"AVI ": "an AVI video", b"WEBP": "a WebP image", b"RMID": "a MIDI file (notes, not audio)"}.get(
            form, "a RIFF file that is not WAVE")
    if b.startswith(_W64_GUID):
        return "w64"
    if b[:4] == b"FORM" and b[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if b[:4] == b"fLaC":
        return "flac"
    if b[:4] == b"OggS":
        return "opus" if b"OpusHead" in b else "ogg"
    if b[:3] == b"ID3":
        return "id3"
    if b[4:8] in _MP4_BOXES:
        return "an HEIF/AVIF image" if b[4:8] == b"ftyp" and b[8:12] in _IMAGE_BRANDS else "mp4"
    if b.startswith(_ASF_GUID):
        return "asf"
    if b[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 byte order mark, which would pass for an MPEG sync
        return "a text file (UTF-16)"
    if b[:4] == b"ADIF" or _adts(b):
        return "aac"
    if _mpeg_audio(b):
        return "mp3"
    if b[:4] == b"caff":
        return "caf"
    if b[:4] == b".snd":
        return "au"
    for prefix, what in _NOT_AUDIO:
        if b.startswith(prefix):
            return what
    if b.lstrip()[:1] == b"<":
        return "an HTML/XML document"
    if _looks_like_text(b):
        return "a text file"
    return "unknown"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    container: str  # what sniff() found
    reason: str = ""  # why it is not queued ("" when ok)


#: One shared (immutable) verdict per container: a scan of 10,000 files builds no new ones.
_ACCEPTED = {container: Verdict(True, container) for container in AUDIO_CONTAINERS}


def check(head: bytes, ext: str) -> Verdict:
    """May a file with extension ``ext`` and these first bytes be queued as audio?"""
    found = sniff(head)
    accepted = _ACCEPTED.get(found)
    if accepted is not None:
        return accepted
    if found == "unknown":
        return Verdict(False, found, f"not an audio file (its content is not {ext or 'audio'})")
    return Verdict(False, found, f"not an audio file: looks like {found}")
