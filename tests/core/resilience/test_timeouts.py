import json
import math
import random

import numpy as np
import pytest

from core.resilience.errors import StageTimeout
from core.resilience.timeouts import (
    AdaptiveTimeout,
    AdaptiveTimeoutConfig,
    Deadline,
    DurationHistory,
    percentile,
    system_load,
)


def cfg(**kw):
    base = dict(default_s=600.0, floor_s=5.0, ceiling_s=5000.0, percentile=95.0, margin=3.0, min_samples=5, startup_s=10.0)
    base.update(kw)
    return AdaptiveTimeoutConfig(**base)


def no_load():
    return 0.0


# --- Deadline ---------------------------------------------------------------


def test_deadline_counts_down_on_the_injected_clock(clock):
    d = Deadline(10.0, clock)
    assert d.elapsed() == 0.0 and d.remaining() == 10.0 and not d.expired()
    clock.advance(4.0)
    assert d.elapsed() == pytest.approx(4.0) and d.remaining() == pytest.approx(6.0)
    d.raise_if_expired("decode")
    clock.advance(6.0)
    assert d.expired() and d.remaining() == 0.0
    clock.advance(100.0)
    assert d.remaining() == 0.0 and d.elapsed() == pytest.approx(110.0)
    with pytest.raises(StageTimeout, match="decode timed out after 10 s"):
        d.raise_if_expired("decode")


def test_deadline_rejects_negative_and_nan(clock):
    with pytest.raises(ValueError, match="seconds"):
        Deadline(-1.0, clock)
    with pytest.raises(ValueError, match="seconds"):
        Deadline(float("nan"), clock)
    assert not Deadline(math.inf, clock).expired()


# --- percentile and load ------------------------------------------------------


def test_percentile_matches_numpy():
    rng = random.Random(5)
    for n in (1, 2, 7, 50):
        xs = [rng.uniform(0, 10) for _ in range(n)]
        for q in (1, 50, 90, 95, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_system_load_is_a_finite_non_negative_number():
    load = system_load()
    assert math.isfinite(load) and load >= 0


# --- AdaptiveTimeout ----------------------------------------------------------


def test_default_with_no_or_too_little_history():
    t = AdaptiveTimeout(cfg(min_samples=5), load_fn=no_load)
    p = t.predict(120.0, [])
    assert p.seconds == 600.0 and p.source == "default" and p.rate is None
    assert t.timeout_for(120.0, [(1.0, 10.0)] * 4) == 600.0


def test_default_is_clamped():
    assert AdaptiveTimeout(cfg(default_s=1.0, floor_s=5.0), load_fn=no_load).timeout_for(60, []) == 5.0
    assert AdaptiveTimeout(cfg(default_s=9000.0, ceiling_s=5000.0), load_fn=no_load).timeout_for(60, []) == 5000.0


def test_prediction_formula():
    # Rates 0.5 s per audio second everywhere: (0.5 * 100 * 3 + 10) = 160 s.
    t = AdaptiveTimeout(cfg(), load_fn=no_load)
    p = t.predict(100.0, [(5.0, 10.0)] * 6)
    assert p.source == "history" and p.rate == pytest.approx(0.5) and p.samples == 6
    assert p.seconds == pytest.approx(160.0)


def test_percentile_choice_decides_how_outliers_count():
    samples = [(10.0, 10.0)] * 19 + [(100.0, 10.0)]  # one run 10x slower
    median = AdaptiveTimeout(cfg(percentile=50.0, margin=1.0, startup_s=0.0), load_fn=no_load)
    worst = AdaptiveTimeout(cfg(percentile=100.0, margin=1.0, startup_s=0.0), load_fn=no_load)
    assert median.timeout_for(60.0, samples) == pytest.approx(60.0)
    assert worst.timeout_for(60.0, samples) == pytest.approx(600.0)


def test_prediction_follows_the_history():
    history = DurationHistory(max_per_stage=20)
    t = AdaptiveTimeout(cfg(), load_fn=no_load)
    for _ in range(20):
        history.add("analyze", 30.0, 60.0)  # 0.5 s per audio second
    fast = t.timeout_for(100.0, history.samples("analyze"))
    assert fast == pytest.approx(160.0)

    # The machine (or the stage) gets slower: predictions rise step by step...
    previous = fast
    rising = []
    for _ in range(20):
        history.add("analyze", 120.0, 60.0)  # 2 s per audio second
        now = t.timeout_for(100.0, history.samples("analyze"))
        assert now >= previous
        rising.append(now)
        previous = now
    assert rising[0] < rising[-1]
    # ...until the old fast samples have aged out and the prediction is the new rate's.
    assert rising[-1] == pytest.approx(2.0 * 100 * 3 + 10)

    # Scales with the file's length.
    assert t.timeout_for(200.0, history.samples("analyze")) == pytest.approx(2.0 * 200 * 3 + 10)


def test_prediction_is_clamped_at_floor_and_ceiling():
    t = AdaptiveTimeout(cfg(floor_s=30.0, ceiling_s=900.0, startup_s=0.0), load_fn=no_load)
    quick = [(0.01, 60.0)] * 10
    slow = [(600.0, 60.0)] * 10
    assert t.timeout_for(60.0, quick) == 30.0
    assert t.timeout_for(60.0, slow) == 900.0


def test_load_scaling():
    samples = [(5.0, 10.0)] * 10  # 160 s unloaded for 100 s of audio
    assert AdaptiveTimeout(cfg(), load_fn=lambda: 2.5).timeout_for(100.0, samples) == pytest.approx(400.0)
    assert AdaptiveTimeout(cfg(), load_fn=lambda: 0.3).timeout_for(100.0, samples) == pytest.approx(160.0)
    off = AdaptiveTimeout(cfg(load_scaling=False), load_fn=lambda: 8.0)
    assert off.timeout_for(100.0, samples) == pytest.approx(160.0)
    assert AdaptiveTimeout(cfg(), load_fn=lambda: 2.5).predict(100.0, samples).load_scale == 2.5
    # Scaled predictions are still clamped.
    assert AdaptiveTimeout(cfg(ceiling_s=300.0), load_fn=lambda: 50.0).timeout_for(100.0, samples) == 300.0


@pytest.mark.parametrize("load_fn", [lambda: float("nan"), lambda: 1 / 0])
def test_unreadable_load_counts_as_unloaded(load_fn):
    assert AdaptiveTimeout(cfg(), load_fn=load_fn).timeout_for(100.0, [(5.0, 10.0)] * 10) == pytest.approx(160.0)


def test_invalid_samples_are_ignored():
    t = AdaptiveTimeout(cfg(min_samples=3), load_fn=no_load)
    junk = [(5.0, 0.0), (-1.0, 10.0), (float("nan"), 10.0), (5.0, float("inf"))]
    assert t.predict(100.0, junk + [(5.0, 10.0)] * 2).source == "default"
    p = t.predict(100.0, junk + [(5.0, 10.0)] * 3)
    assert p.source == "history" and p.samples == 3 and p.seconds == pytest.approx(160.0)
    with pytest.raises(ValueError, match="audio_s"):
        t.predict(-5.0, [])


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(floor_s=-1.0), "floor_s"),
        (dict(floor_s=100.0, ceiling_s=50.0), "ceiling_s"),
        (dict(percentile=0.0), "percentile"),
        (dict(percentile=101.0), "percentile"),
        (dict(margin=0.5), "margin"),
        (dict(min_samples=0), "min_samples"),
        (dict(default_s=float("inf")), "default_s"),
        (dict(startup_s=-2.0), "startup_s"),
        (dict(load_scaling="yes"), "load_scaling"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        cfg(**kw)


def test_config_round_trips_through_json():
    c = cfg(percentile=90.0, margin=2.0, min_samples=8, load_scaling=False)
    assert AdaptiveTimeoutConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert AdaptiveTimeoutConfig.from_dict({}) == AdaptiveTimeoutConfig()
    with pytest.raises(ValueError, match="ceiling"):
        AdaptiveTimeoutConfig.from_dict({"ceiling": 10})


# --- DurationHistory ----------------------------------------------------------


def test_history_keeps_the_most_recent_samples_per_stage():
    h = DurationHistory(max_per_stage=3)
    for i in range(1, 6):
        h.add("separate", float(i), 10.0)
    h.add("analyze", 2.0, 4.0)
    assert [s.elapsed_s for s in h.samples("separate")] == [3.0, 4.0, 5.0]
    assert h.samples("analyze") == [(2.0, 4.0)]
    assert h.samples("transcribe") == []
    assert h.stages() == ["analyze", "separate"]
    h.extend("transcribe", [(1.0, 2.0), (3.0, 4.0)])
    assert h.samples("transcribe") == [(1.0, 2.0), (3.0, 4.0)]


def test_history_returns_copies_and_rejects_bad_samples():
    h = DurationHistory()
    h.add("analyze", 1.0, 2.0)
    h.samples("analyze").clear()
    assert len(h.samples("analyze")) == 1
    for bad in [(-1.0, 2.0), (1.0, 0.0), (float("nan"), 2.0)]:
        with pytest.raises(ValueError, match="analyze"):
            h.add("analyze", *bad)
    with pytest.raises(ValueError, match="max_per_stage"):
        DurationHistory(max_per_stage=0)
