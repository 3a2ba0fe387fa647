"""Tempo, beats, downbeats and bars on synthesized clicks and drum grooves (60-180 BPM)."""

import functools

import numpy as np
import pytest

from core.pipeline import rhythm
from core.pipeline.analyze import AnalysisConfig, AnalysisResult, analyze_audio
from tests import synth

SR = synth.SR
TEMPOS = [60, 72, 85, 90, 100, 110, 120, 128, 140, 150, 165, 174, 180]
KINDS = ["click", "drums"]


def bars_for(bpm: float, numerator: int = 4, seconds: float = 10.0) -> int:
    """About ``seconds`` of whole bars, at least two."""
    return max(2, round(seconds / (numerator * 60.0 / bpm)))


@functools.cache
def analysed(kind: str, bpm: float, numerator: int = 4, offset_s: float = 0.0) -> AnalysisResult:
    bars = bars_for(bpm, numerator)
    if kind == "click":
        y = synth.click_track(bpm, bars * numerator, accent_every=numerator, offset_s=offset_s)
    else:
        y = synth.drum_pattern(bpm, bars, numerator=numerator, offset_s=offset_s)
    return analyze_audio(y, SR, AnalysisConfig(beats_per_bar=numerator))


@pytest.mark.parametrize("bpm", TEMPOS)
@pytest.mark.parametrize("kind", KINDS)
def test_tempo_within_two_percent_and_no_octave_error(kind, bpm):
    r = analysed(kind, bpm)
    assert r.tempo_bpm == pytest.approx(bpm, rel=0.02), f"{kind} at {bpm} BPM read as {r.tempo_bpm:.2f}"
    half, double = r.tempo_alternatives
    assert (half.relation, double.relation) == ("half", "double")
    assert half.bpm == pytest.approx(r.tempo_bpm / 2) and double.bpm == pytest.approx(r.tempo_bpm * 2)
    assert 0.0 < r.tempo_confidence <= 1.0


@pytest.mark.parametrize("bpm", TEMPOS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_beat_found_and_bars_match_the_synthesized_bars(kind, bpm):
    r = analysed(kind, bpm)
    bars = bars_for(bpm)
    truth = synth.beat_times(bpm, 4 * bars)
    assert len(r.beat_times) == len(truth)
    assert np.max(np.abs(r.beat_times - truth)) < 0.05  # 50 ms, inside the usual 70 ms beat tolerance
    assert len(r.bars) == bars
    bar_starts = truth[::4]
    assert np.max(np.abs(r.downbeat_times - bar_starts)) < 0.05
    assert [b.index for b in r.bars] == list(range(bars))
    assert all(b.n_beats == 4 for b in r.bars)
    bar_s = 240.0 / bpm
    assert np.allclose([b.end_s - b.start_s for b in r.bars], bar_s, rtol=0.03)


def test_refined_tempo_beats_frame_quantisation():
    # At 174 BPM one frame of lag (11.6 ms at 22050/512) is ~5 BPM; the refined tempo is far closer.
    r = analysed("click", 174)
    assert abs(r.tempo_bpm - 174) < 0.3


@pytest.mark.parametrize("bpm", [66, 120, 178])
def test_three_four_time(bpm):
    r = analysed("drums", bpm, numerator=3)
    bars = bars_for(bpm, 3)
    assert r.tempo_bpm == pytest.approx(bpm, rel=0.02)
    assert len(r.bars) == bars
    assert np.allclose(r.downbeat_times, synth.beat_times(bpm, 3 * bars)[::3], atol=0.05)
    assert r.to_summary_dict()["time_signature"] == "3/4"


def test_lead_in_silence_shifts_beats_not_bars():
    r = analysed("drums", 100, offset_s=0.37)
    assert len(r.bars) == bars_for(100)
    assert r.downbeat_times[0] == pytest.approx(0.37, abs=0.04)


def test_downbeat_follows_the_kick_not_the_first_beat():
    # A pickup: the clip starts on beat 3 of a bar, so the kick lands on the third beat heard.
    bpm, beat = 120.0, 0.5
    full = synth.drum_pattern(bpm, 5, tail_s=0.5)
    y = full[int(2 * beat * SR):]
    r = analyze_audio(y, SR)
    assert len(r.beat_times) == 18
    assert r.downbeat_times[0] == pytest.approx(2 * beat, abs=0.05)
    assert len(r.bars) == 4  # the two pickup beats belong to no bar


def test_quiet_coda_keeps_its_beats_and_bars():
    r = analyze_audio(synth.drum_pattern(90, 4, bar_gains=[1.0, 1.0, 0.1, 0.1]), SR)
    assert len(r.beat_times) == 16 and len(r.bars) == 4


def test_noise_after_the_music_adds_no_beats():
    drums = synth.drum_pattern(137, 6, tail_s=0.0)
    y = synth.mix(drums, synth.noise(len(drums) / SR + 2.0, rms_db=-35.0))
    r = analyze_audio(y, SR)
    assert len(r.beat_times) == 24 and len(r.bars) == 6


# -- the building blocks -------------------------------------------------------

def test_beat_period_counts_a_skipped_beat():
    beats = np.array([0.0, 0.5, 1.0, 2.0, 2.5, 3.0])  # the beat at 1.5 s is missing
    assert rhythm.beat_period(beats) == pytest.approx(0.5)
    jittered = np.arange(20) * 0.4 + np.random.default_rng(0).normal(0, 0.01, 20)
    assert rhythm.beat_period(jittered) == pytest.approx(0.4, rel=0.01)
    assert rhythm.beat_period(np.array([1.0])) == 0.0


def test_choose_beat_lag_steps_down_to_the_fastest_clear_level():
    lags = np.arange(200, dtype=float)

    def bumps(*centres_and_heights):
        ac = np.zeros_like(lags)
        ac[0] = 1.0
        for c, h in centres_and_heights:
            ac += h * np.exp(-0.5 * ((lags - c) / 1.0) ** 2)
        return ac

    # beat at 20 frames, bar-level lag 40 stronger: the beat wins (it is a clear peak)
    assert rhythm.choose_beat_lag(bumps((20, 0.5), (40, 0.8)), 10, 60) == pytest.approx(20, abs=0.5)
    # a faint half-lag peak (hi-hats between beats) does not pull the tempo up
    assert rhythm.choose_beat_lag(bumps((15, 0.1), (30, 0.7), (60, 0.9)), 12, 62) == pytest.approx(30, abs=0.5)
    # an eighth-note bass line under a slow groove (the half-bar lag strongest, the beat as strong, the eighth
    # clear but well below the beat): each level is judged against the one it divides, so the beat holds
    assert rhythm.choose_beat_lag(bumps((20, 0.29), (40, 0.70), (80, 0.72)), 10, 90) == pytest.approx(40, abs=0.5)
    # a bar-level peak whose beat is clear though its half-bar is not: a quarter of it, on the first step
    assert rhythm.choose_beat_lag(bumps((20, 0.6), (80, 0.9)), 10, 90) == pytest.approx(20, abs=0.5)
    # nothing periodic: no lag
    assert rhythm.choose_beat_lag(bumps((30, 0.05)), 10, 60) is None
    # a few frames per beat (a long hop): the search ends (it once looped on lag 2 and 3 for ever)
    tiny = np.zeros(12)
    tiny[0], tiny[2], tiny[3], tiny[6] = 1.0, 0.6, 0.5, 0.7
    assert rhythm.choose_beat_lag(tiny, 1.5, 8) in (pytest.approx(2, abs=0.5), pytest.approx(3, abs=0.5))


def test_downbeat_phase_picks_the_accented_beat_and_the_earliest_on_ties():
    accents = np.tile([1.0, 3.0, 1.0, 1.0], 4)
    assert rhythm.downbeat_phase(accents, 4) == 1
    assert rhythm.downbeat_phase(np.ones(12), 4) == 0
    assert rhythm.downbeat_phase(np.tile([2.0, 1.0, 2.0, 1.0], 3), 4) == 0


def test_make_bars_drops_a_final_fragment():
    beats = np.arange(10) * 0.5  # 10 beats of 4/4: two full bars and a 2-beat fragment
    bars = rhythm.make_bars(beats, 0, 4, 0.5, duration_s=5.2)
    assert [b.n_beats for b in bars] == [4, 4, 2]  # half a bar still counts
    bars = rhythm.make_bars(beats[:9], 0, 4, 0.5, duration_s=5.2)
    assert [b.n_beats for b in bars] == [4, 4]
    assert bars[1].end_s == pytest.approx(4.0)


def test_silence_and_flat_envelopes_have_no_rhythm():
    none = rhythm.analyze_rhythm(np.zeros(500), (np.zeros(500),), 43.07, 4, 50, 200, 11.6)
    assert none.tempo_bpm == 0.0 and len(none.beat_times) == 0 and none.bars == ()


def test_the_harmony_changing_on_beat_one_finds_the_bar_when_kicks_on_1_and_3_cannot():
    """Kick on 1 and 3 alike, snare on 2 and 4, the chord changing at each bar, the audio starting on beat 3:
    the drums alone tie beats 1 and 3 (and the earliest, beat 3, would win); the chord changes decide."""
    bpm, bars = 110.0, 6
    beat_s, bar_s = 60.0 / bpm, 240.0 / bpm
    pattern = {"kick": ((0.0, 1.0), (2.0, 1.0)), "snare": ((1.0, 0.8), (3.0, 0.8))}
    drums = synth.drum_pattern(bpm, bars, pattern=pattern, tail_s=0.0)
    chords = [(48, 52, 55), (43, 47, 50), (45, 48, 52), (41, 45, 48)]  # C, G, Am, F: one a bar
    # sustained chords cross-faded into each other (30 ms): no attack, so no level accent on beat 1 either
    fade = 0.03
    harmony = np.zeros(int(round((bars * bar_s + fade) * SR)))
    for b in range(bars):
        chord = sum(synth.tone(synth.midi_to_hz(m), bar_s + fade, attack_s=fade, release_s=fade)
                    for m in chords[b % 4])
        start = int(round(b * bar_s * SR))
        harmony[start:start + len(chord)] += chord[: len(harmony) - start]
    n = min(len(drums), len(harmony))
    y = drums[:n] + 0.08 * harmony[:n]
    y = y[int(round(2 * beat_s * SR)):]  # start on beat 3 of the first bar
    r = analyze_audio(y.astype(np.float32), SR, AnalysisConfig(beats_per_bar=4))
    assert r.tempo_bpm == pytest.approx(bpm, rel=0.02)
    truth = np.arange(1, bars) * bar_s - 2 * beat_s  # the bar starts after the cut
    found = [d for d in r.downbeat_times if d > 0.2]  # the partial first bar aside
    assert len(found) >= bars - 2
    assert np.max(np.abs(np.asarray(found[: len(truth)]) - truth[: len(found)])) < 0.06
    # and the harmonic change itself: one number per beat, 0 for the first, largest where the chord changes
    frames = np.arange(0, 400, 40)
    chroma = np.zeros((12, 400))
    chroma[0, :] = 1.0
    chroma[7, 160:] = 1.0  # the harmony changes at frame 160, a beat
    change = rhythm.harmonic_change(chroma, frames)
    assert change.shape == frames.shape and change[0] == 0.0 and int(np.argmax(change)) == 4
