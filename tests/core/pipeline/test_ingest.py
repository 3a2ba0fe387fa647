import builtins
import hashlib
import os
import shutil
import struct
import subprocess
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from core.pipeline import ingest_ffmpeg
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import decode, ingest, probe
from core.resilience.errors import ErrorKind, classify

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not on PATH")
CFG = PipelineConfig()


def stereo_sine(seconds=3.0, sr=44100, freq=440.0, amps=(0.5, 0.25)):
    t = np.arange(int(seconds * sr)) / sr
    tone = np.sin(2 * np.pi * freq * t)
    return np.stack([a * tone for a in amps], axis=1).astype(np.float32)  # (frames, channels)


def dominant_hz(y, sr):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spectrum) * sr / len(y)


def kind_of(excinfo):
    return classify(excinfo.value).kind


def ffmpeg_encode(src, dst, *args):
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True)


def no_ffmpeg(monkeypatch):
    monkeypatch.setattr(ingest_ffmpeg.shutil, "which", lambda name: None)


# --- formats that decode -------------------------------------------------------


@pytest.mark.parametrize(
    "ext, subtype, tol",
    [("wav", "PCM_16", 1e-4), ("wav", "PCM_24", 1e-6), ("wav", "FLOAT", 0), ("flac", "PCM_16", 1e-4),
     ("flac", "PCM_24", 1e-6), ("ogg", "VORBIS", None), ("ogg", "OPUS", None), ("aiff", "PCM_16", 1e-4)],
)
def test_soundfile_formats_decode_to_float32_channels_first(tmp_path, ext, subtype, tol):
    sr = 48000 if subtype == "OPUS" else 44100
    data = stereo_sine(sr=sr)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, data, sr, subtype=subtype)

    res = ingest(path, CFG)
    assert res.audio.dtype == np.float32 and res.audio.shape[0] == 2
    assert res.sr == sr and res.probe.decoder == "soundfile" and res.probe.channels == 2
    assert res.probe.frames == res.audio.shape[1] and res.probe.duration_s == pytest.approx(3.0, abs=0.05)
    assert res.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dominant_hz(res.audio[0], sr) == pytest.approx(440, abs=1)
    # channel order kept: the right channel is half the left
    assert np.std(res.audio[1]) / np.std(res.audio[0]) == pytest.approx(0.5, rel=0.05)
    assert res.audio.T.flags.c_contiguous  # (frames, channels) as soxr/soundfile take it
    if tol is not None:
        assert res.audio.shape[1] == len(data)
        assert np.max(np.abs(res.audio.T - data)) <= tol


def test_mp3_through_soundfile(tmp_path):
    path = tmp_path / "tone.mp3"
    try:
        sf.write(path, stereo_sine(), 44100, format="MP3", subtype="MPEG_LAYER_III")
    except (sf.LibsndfileError, TypeError, ValueError) as exc:
        pytest.skip(f"this libsndfile cannot write MP3: {exc}")
    res = ingest(path, CFG)
    assert res.probe.decoder == "soundfile" and res.probe.format == "MP3"
    assert res.audio.shape[0] == 2 and res.duration_s == pytest.approx(3.0, abs=0.1)
    assert dominant_hz(res.audio[0], 44100) == pytest.approx(440, abs=1)


@needs_ffmpeg
@pytest.mark.parametrize("ext, args", [("m4a", ["-c:a", "aac"]), ("wma", ["-c:a", "wmav2"])])
def test_ffmpeg_formats_decode(tmp_path, ext, args):
    wav = tmp_path / "src.wav"
    sf.write(wav, stereo_sine(), 44100)
    path = tmp_path / f"tone.{ext}"
    ffmpeg_encode(wav, path, *args)

    info = probe(path)
    assert info.decoder == "ffmpeg" and info.sample_rate == 44100 and info.channels == 2
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    res = ingest(path, CFG, ffmpeg=FFMPEG)
    assert res.audio.dtype == np.float32 and res.audio.shape[0] == 2 and res.sr == 44100
    assert res.duration_s == pytest.approx(3.0, abs=0.1)
    assert dominant_hz(res.audio[0], 44100) == pytest.approx(440, abs=1)
    assert np.std(res.audio[1]) / np.std(res.audio[0]) == pytest.approx(0.5, rel=0.05)
    assert res.audio.T.flags.c_contiguous


@needs_ffmpeg
def test_ffmpeg_handles_colons_and_odd_bytes_in_names(tmp_path):
    wav = tmp_path / "src.wav"
    sf.write(wav, stereo_sine(), 44100)
    path = tmp_path / os.fsdecode(b"a:b \xff.m4a")
    ffmpeg_encode(wav, tmp_path / "x.m4a", "-c:a", "aac")
    try:
        os.rename(tmp_path / "x.m4a", path)
    except OSError as exc:  # e.g. macOS refuses names that are not UTF-8
        pytest.skip(f"this filesystem refuses the name: {exc}")
    audio, sr = decode(path)
    assert sr == 44100 and audio.shape[0] == 2


# --- inputs that are refused, each with its kind ------------------------------


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(Exception) as e:
        ingest(tmp_path / "e.wav", CFG)
    assert kind_of(e) is ErrorKind.INPUT_EMPTY and "0 bytes" in str(e.value)


def test_wav_whose_header_promises_more_frames_than_present(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, stereo_sine(seconds=6), 44100, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert sf.info(path).frames < 6 * 44100  # libsndfile quietly shortens it ...
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_CORRUPT and "truncated" in str(e.value)  # ... we don't


@pytest.mark.parametrize("ext, subtype", [("flac", "PCM_16"), ("wav", "PCM_24")])
def test_other_truncations(tmp_path, ext, subtype):
    path = tmp_path / f"cut.{ext}"
    sf.write(path, stereo_sine(seconds=6), 44100, subtype=subtype)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_CORRUPT


@needs_ffmpeg
@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_m4a(tmp_path, faststart):
    wav = tmp_path / "src.wav"
    sf.write(wav, stereo_sine(seconds=6), 44100)
    path = tmp_path / "cut.m4a"
    ffmpeg_encode(wav, path, "-c:a", "aac", *(["-movflags", "+faststart"] if faststart else []))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_CORRUPT


@pytest.mark.parametrize("with_ffmpeg", [True, False])
@pytest.mark.parametrize(
    "name, content",
    [("noise.wav", os.urandom(50_000)), ("notes.mp3", b"not music, just a text file\n" * 50),
     ("random.flac", os.urandom(4096))],
)
def test_not_audio(tmp_path, monkeypatch, name, content, with_ffmpeg):
    if with_ffmpeg and FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    if not with_ffmpeg:
        no_ffmpeg(monkeypatch)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) in (ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED)


def test_unknown_extension_without_ffmpeg_is_unsupported(tmp_path, monkeypatch):
    no_ffmpeg(monkeypatch)
    path = tmp_path / "data.xyz"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_UNSUPPORTED


@pytest.mark.parametrize("peak", [0.0, 10 ** (-70 / 20)])
def test_all_silence(tmp_path, peak):
    path = tmp_path / "quiet.wav"
    sf.write(path, stereo_sine(amps=(peak, peak)), 44100, subtype="FLOAT")
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_EMPTY and "silence" in str(e.value)
    # the same file passes with a lower threshold (when it is not digital silence)
    if peak:
        assert ingest(path, PipelineConfig(silence_threshold_dbfs=-80)).audio.shape[0] == 2


def test_shorter_than_minimum(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, stereo_sine(seconds=1.0), 44100)
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_EMPTY and "1.00 s" in str(e.value) and "2 s" in str(e.value)
    assert ingest(path, PipelineConfig(min_duration_s=0.5)).duration_s == pytest.approx(1.0)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unreadable_file_is_a_permission_error(tmp_path):
    path = tmp_path / "locked.wav"
    sf.write(path, stereo_sine(), 44100)
    path.chmod(0)
    try:
        with pytest.raises(PermissionError) as e:
            ingest(path, CFG)
        assert kind_of(e) is ErrorKind.PERMISSION
    finally:
        path.chmod(0o644)


def test_unreadable_file_is_a_permission_error_simulated(tmp_path, monkeypatch):
    path = tmp_path / "locked.wav"
    sf.write(path, stereo_sine(), 44100)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    with pytest.raises(PermissionError) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.PERMISSION


def test_m4a_without_ffmpeg_is_a_missing_dependency_with_an_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "song.m4a"
    # an MP4 header is enough: libsndfile refuses it before anything else is read
    path.write_bytes(struct.pack(">I", 24) + b"ftypM4A \x00\x00\x02\x00M4A isom" + os.urandom(2000))
    no_ffmpeg(monkeypatch)
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    info = classify(e.value)
    assert info.kind is ErrorKind.DEPENDENCY_MISSING
    assert "ffmpeg" in info.reason and "install" in info.suggestion.lower()
    with pytest.raises(Exception) as e:
        ingest(path, CFG, ffmpeg=tmp_path / "no-such-ffmpeg")
    assert kind_of(e) is ErrorKind.DEPENDENCY_MISSING and "no-such-ffmpeg" in str(e.value)


def test_nan_and_inf_samples_are_corrupt(tmp_path):
    for i, bad in enumerate((np.nan, np.inf)):
        data = stereo_sine()
        data[1000, 1] = bad
        path = tmp_path / f"bad{i}.wav"
        sf.write(path, data, 44100, subtype="FLOAT")
        with pytest.raises(Exception) as e:
            ingest(path, CFG)
        assert kind_of(e) is ErrorKind.INPUT_CORRUPT and "NaN" in str(e.value)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(Exception) as e:
        ingest(tmp_path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_UNSUPPORTED
    with pytest.raises(Exception) as e:
        ingest(tmp_path / "gone.wav", CFG)
    assert kind_of(e).is_input and "not found" in str(e.value)


@needs_ffmpeg
def test_video_without_audio_is_unsupported(tmp_path):
    path = tmp_path / "clip.mp4"
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=1",
                    "-c:v", "mpeg4", str(path)], check=True)
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_UNSUPPORTED and "no audio stream" in str(e.value)


# --- size -------------------------------------------------------------------------


def test_ten_minute_file_holds_one_copy(tmp_path):
    sr, seconds = 22050, 600
    path = tmp_path / "long.wav"
    block = sr * 10
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for start in range(0, sr * seconds, block):
            t = (start + np.arange(block)) / sr
            f.write(np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1))
    tracemalloc.start()
    try:
        res = ingest(path, CFG)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert res.audio.shape == (2, sr * seconds)
    assert res.audio.nbytes == 2 * sr * seconds * 4
    assert peak < res.audio.nbytes * 1.05 + 8_000_000, f"peak {peak / 1e6:.0f} MB for {res.audio.nbytes / 1e6:.0f} MB"
    assert np.abs(res.audio[0, -sr:]).max() == pytest.approx(0.3, abs=0.01)


def test_ogg_whose_frames_cannot_be_found_is_corrupt_not_empty(tmp_path, monkeypatch):
    no_ffmpeg(monkeypatch)
    path = tmp_path / "cut.ogg"
    sf.write(path, stereo_sine(seconds=3), 44100, subtype="VORBIS")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert sf.info(path).frames == 0  # libsndfile opens it but finds no frames
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_CORRUPT


def test_ogg_cut_short_decodes_what_is_there(tmp_path):
    # A cut Ogg stream plays up to the cut everywhere; its header cannot tell, so it is accepted.
    path = tmp_path / "cut.ogg"
    sf.write(path, stereo_sine(seconds=8), 44100, subtype="VORBIS")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    res = ingest(path, PipelineConfig(min_duration_s=0.5))
    assert 0.5 <= res.duration_s < 8.0 and res.probe.frames == res.audio.shape[1]


def test_header_only_wav_is_empty(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(path, np.zeros((0, 2), np.float32), 44100)
    with pytest.raises(Exception) as e:
        ingest(path, CFG)
    assert kind_of(e) is ErrorKind.INPUT_EMPTY


# --- a header without the length (a FLAC written through a pipe) -----------------------------------------


def unknown_length_flac(path, seconds=5.0, sr=22050, freq=440.0):
    """A FLAC whose STREAMINFO says "total samples unknown" (0), as one written to a pipe does."""
    y = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
    sf.write(path, y, sr)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"  # then STREAMINFO: the 36-bit total sits in bytes 21 (low nibble) to 25
    data[21] &= 0xF0
    data[22:26] = bytes(4)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames >= 1 << 62  # libsndfile: "unknown" (was a ValueError deep in decoding)
    return path


@pytest.mark.parametrize("with_ffmpeg", [pytest.param(True, marks=needs_ffmpeg), False])
def test_a_flac_without_its_length_in_the_header_decodes_whole(tmp_path, monkeypatch, with_ffmpeg):
    from core.pipeline.ingest import ingest_mono

    path = unknown_length_flac(tmp_path / "piped.flac")
    if not with_ffmpeg:
        no_ffmpeg(monkeypatch)
    info = probe(path)
    assert info.frames == 0 and info.duration_s == 0.0  # unknown, said as such
    assert info.decoder == ("ffmpeg" if with_ffmpeg else "soundfile")
    result = ingest(path, CFG)
    # ffmpeg decodes every frame; libsndfile fails at such a stream's end and loses less than 1,024 frames
    assert 5.0 - 1024 / 22050 <= result.probe.duration_s <= 5.0 + 1e-6
    assert abs(dominant_hz(result.audio[0], result.sr) - 440.0) < 2.0
    mono = ingest_mono(path, CFG, 22050)
    assert abs(len(mono.y) - result.audio.shape[1]) <= 1


def test_a_header_claiming_a_sample_rate_of_1_hz_is_corrupt_before_decoding(tmp_path):
    path = tmp_path / "one_hz.wav"
    sf.write(path, stereo_sine(1.0, 8000), 8000)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"fmt "
    data[24:28] = struct.pack("<I", 1)  # sample rate
    data[28:32] = struct.pack("<I", 4)  # byte rate (1 Hz x 2 channels x 2 bytes)
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).samplerate == 1  # 8,000 frames: "2.2 hours" of audio
    with pytest.raises(Exception) as excinfo:
        ingest(path, CFG)
    assert kind_of(excinfo) is ErrorKind.INPUT_CORRUPT and "1 Hz" in str(excinfo.value)


def test_float_samples_far_above_full_scale_are_corrupt(tmp_path):
    path = tmp_path / "huge.wav"
    sf.write(path, stereo_sine(3.0) * 1e29, 44100, subtype="FLOAT")
    with pytest.raises(Exception) as excinfo:
        ingest(path, CFG)
    assert kind_of(excinfo) is ErrorKind.INPUT_CORRUPT and "dBFS" in str(excinfo.value)
    loud = tmp_path / "hot_master.wav"  # a float mix a few dB over full scale is audio, not damage
    sf.write(loud, stereo_sine(3.0, amps=(2.0, 1.5)), 44100, subtype="FLOAT")
    assert ingest(loud, CFG).probe.duration_s == pytest.approx(3.0)


def test_stereo_whose_channels_cancel_in_the_mix_is_analysed_from_one_channel(tmp_path):
    """Left = -right: the mono mix would be silence (or rounding noise, analysed as music); one channel is not."""
    from core.pipeline.ingest import ingest_mono

    sr = 22050
    t = np.arange(3 * sr) / sr
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "inverted.wav"
    sf.write(path, np.stack([left, -left], axis=1).astype(np.float32), sr, subtype="PCM_24")
    mono = ingest_mono(path, CFG, sr)
    assert np.sqrt(np.mean(mono.y ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)
    assert abs(dominant_hz(mono.y, sr) - 440.0) < 2.0
    wide = tmp_path / "wide.wav"  # ordinary stereo, partly out of phase: still the mix
    sf.write(wide, np.stack([left, 0.5 * np.sin(2 * np.pi * 440 * t + 2.0)], axis=1).astype(np.float32), sr)
    mix = ingest_mono(wide, CFG, sr).y
    expected = 0.5 * (left + 0.5 * np.sin(2 * np.pi * 440 * t + 2.0))
    assert np.allclose(mix, expected, atol=1e-3)
