"""Circuit breaker: config, state machine, permits, listeners, persistence (fake clock, no sleeping)."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import threading

import pytest

from core.resilience.breaker import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
)
from core.resilience.breaker_registry import MemoryBreakerStore
from core.resilience.errors import (
    Cancelled,
    DependencyFailed,
    ErrorKind,
    InputError,
    classify,
    info_for,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make(clock, store=None, name="demucs", **cfg) -> CircuitBreaker:
    return CircuitBreaker(name, BreakerConfig(**cfg), clock=clock, store=store)


def fail(b: CircuitBreaker, error=None) -> None:
    b.record_failure(b.acquire(), error or DependencyFailed("demucs exited with status 1"))


def succeed(b: CircuitBreaker, duration_s: float | None = None) -> None:
    b.record_success(b.acquire(), duration_s)


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.config.failure_threshold):
        fail(b)
    assert b.state is OPEN


# --- config -------------------------------------------------------------------


def test_config_defaults_fit_a_desktop_batch():
    cfg = BreakerConfig()
    assert cfg.failure_threshold == 3 and cfg.window_size == 10 and cfg.min_calls == 4
    assert cfg.excluded_kinds == {
        ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED, ErrorKind.INPUT_EMPTY, ErrorKind.CANCELLED,
    }


@pytest.mark.parametrize(
    "field, value",
    [
        ("failure_threshold", 0),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("failure_rate", 0.0),
        ("failure_rate", 1.5),
        ("failure_rate", float("nan")),
        ("window_size", 0),
        ("min_calls", 0),
        ("min_calls", 11),
        ("slow_call_s", 0),
        ("slow_call_s", "5"),
        ("cooldown_s", -1),
        ("cooldown_s", float("inf")),
        ("half_open_max_calls", 0),
        ("half_open_successes", 0),
        ("half_open_max_wait_s", 0),
        ("excluded_kinds", ["not-a-kind"]),
        ("excluded_kinds", "input-corrupt"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})


def test_config_needs_some_way_to_open():
    with pytest.raises(ValueError, match="failure_threshold and failure_rate"):
        BreakerConfig(failure_threshold=None, failure_rate=None)


def test_config_round_trips_through_json():
    cfg = BreakerConfig(failure_threshold=None, failure_rate=0.6, slow_call_s=120, cooldown_s=45,
                        half_open_max_calls=2, excluded_kinds=["input-corrupt", ErrorKind.CANCELLED])
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["excluded_kinds"] == ["cancelled", "input-corrupt"]
    back = BreakerConfig.from_dict(d)
    assert back == cfg
    assert back.slow_call_s == 120.0 and isinstance(back.slow_call_s, float)
    assert BreakerConfig.from_dict({"cooldown_s": 5}).window_size == 10  # missing keys: defaults


def test_config_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match="ring_buffer_size"):
        BreakerConfig.from_dict({"ring_buffer_size": 100})


# --- opening ------------------------------------------------------------------


def test_opens_after_consecutive_failures(clock):
    b = make(clock, failure_rate=None)
    fail(b)
    fail(b)
    assert b.state is CLOSED and b.snapshot().consecutive_failures == 2
    fail(b)
    snap = b.snapshot()
    assert snap.state is OPEN and snap.failure_count == 3
    assert snap.opened_at_wall == clock.wall() and snap.next_probe_in_s == 30.0


def test_a_success_breaks_the_run_of_failures(clock):
    b = make(clock, failure_rate=None)
    for _ in range(4):
        fail(b)
        fail(b)
        succeed(b)
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.consecutive_failures == 0 and snap.failure_count == 8


def test_opens_on_failure_rate_only_once_min_calls_seen(clock):
    b = make(clock, failure_threshold=None, failure_rate=0.5, window_size=10, min_calls=4)
    fail(b)
    fail(b)
    succeed(b)
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.calls_in_window == 3 and snap.failure_rate == pytest.approx(2 / 3)
    fail(b)  # 3 of 4: min_calls reached
    assert b.state is OPEN


def test_does_not_open_below_threshold_and_rate(clock):
    b = make(clock)  # threshold 3, rate 0.5 over 10, min 4
    for _ in range(6):  # one failure in three: never 3 in a row, never half
        succeed(b)
        fail(b)
        succeed(b)
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.failure_count == 6 and snap.calls_in_window == 10
    assert snap.failure_rate == pytest.approx(0.3)


def test_the_window_slides(clock):
    b = make(clock, failure_threshold=None, failure_rate=0.5, window_size=4, min_calls=4)
    fail(b)
    fail(b)
    fail(b)
    for _ in range(4):
        succeed(b)
    fail(b)  # 4 failures of 8 overall, but only 1 of the last 4
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.calls_in_window == 4 and snap.failure_rate == 0.25


def test_slow_calls_count_as_failures(clock):
    b = make(clock, slow_call_s=5.0, failure_rate=None)
    succeed(b, duration_s=4.9)
    succeed(b, duration_s=6.0)
    succeed(b, duration_s=7.0)
    assert b.snapshot().consecutive_failures == 2
    assert b.call(lambda: clock.advance(10) or "done") == "done"  # duration measured on the clock
    snap = b.snapshot()
    assert snap.state is OPEN and snap.failure_count == 3 and snap.success_count == 1


# --- what never counts --------------------------------------------------------


def test_excluded_kinds_count_as_neither(clock):
    b = make(clock)
    for _ in range(10):
        fail(b, InputError("not a WAV file"))
        fail(b, info_for(ErrorKind.INPUT_EMPTY, "silent"))
        fail(b, info_for(ErrorKind.OUT_OF_MEMORY, "oom"))  # counts_for_breaker=False
        fail(b, Cancelled("user stopped the batch"))
    snap = b.snapshot()
    assert snap.state is CLOSED
    assert (snap.failure_count, snap.success_count, snap.calls_in_window) == (0, 0, 0)


def test_cancellation_never_counts_even_if_not_excluded(clock):
    b = make(clock, failure_threshold=1, excluded_kinds=[])
    fail(b, Cancelled("stop"))
    fail(b, dataclasses.replace(info_for(ErrorKind.CANCELLED, "stop"), counts_for_breaker=True))
    with pytest.raises(KeyboardInterrupt):
        b.call(_raise, KeyboardInterrupt())
    assert b.state is CLOSED and b.snapshot().failure_count == 0
    fail(b)
    assert b.state is OPEN


def test_excluded_kinds_are_configurable(clock):
    b = make(clock, failure_threshold=1, excluded_kinds=[ErrorKind.TIMEOUT])
    fail(b, TimeoutError("separation took too long"))
    assert b.state is CLOSED and b.snapshot().failure_count == 0
    fail(b, InputError("bad file"))  # not excluded here, but input errors never count for a breaker
    assert b.state is CLOSED
    fail(b, info_for(ErrorKind.WORKER_CRASH, "worker died"))
    assert b.state is OPEN


def test_excluded_outcome_gives_the_half_open_slot_back(clock):
    b = make(clock, half_open_max_calls=1)
    trip(b)
    clock.advance(30)
    probe = b.acquire()
    with pytest.raises(BreakerOpenError):
        b.acquire()
    b.record_failure(probe, InputError("corrupt header"))
    assert b.state is HALF_OPEN
    b.release(b.acquire())  # slot free again; release is the same
    b.record_success(b.acquire())
    assert b.state is CLOSED


# --- open, rejection, half-open -------------------------------------------------


def _raise(exc):
    raise exc


def test_open_rejects_and_the_tripping_call_raises_its_own_error(clock):
    b = make(clock, cooldown_s=30)
    boom = DependencyFailed("demucs crashed")
    for _ in range(3):
        with pytest.raises(DependencyFailed) as info:
            b.call(_raise, boom)
        assert info.value is boom  # the third call tripped it and still raised its own error
    assert b.state is OPEN
    clock.advance(10)
    with pytest.raises(BreakerOpenError) as info:
        b.call(pytest.fail, "must not run while open")
    err = info.value
    assert isinstance(err, DependencyFailed) and err.breaker == "demucs"
    assert err.retry_in_s == pytest.approx(20.0)
    assert err.retry_at == pytest.approx(clock.wall() + 20.0)
    assert "next probe in 20.0 s" in str(err) and "demucs" in str(err)
    assert classify(err).kind is ErrorKind.DEPENDENCY_FAILED
    back = pickle.loads(pickle.dumps(err))
    assert (back.breaker, back.retry_in_s, str(back)) == ("demucs", err.retry_in_s, str(err))


def test_half_open_after_cooldown(clock):
    b = make(clock, cooldown_s=30)
    trip(b)
    clock.advance(29.5)
    snap = b.snapshot()
    assert snap.state is OPEN and snap.next_probe_in_s == pytest.approx(0.5)
    clock.advance(0.5)
    snap = b.snapshot()
    assert snap.state is HALF_OPEN and snap.next_probe_in_s is None


def test_at_most_k_probes_at_once(clock):
    b = make(clock, half_open_max_calls=2, half_open_successes=3, half_open_max_wait_s=100)
    trip(b)
    clock.advance(30)
    first, second = b.acquire(), b.acquire()
    assert first.probe and second.probe
    clock.advance(40)
    with pytest.raises(BreakerOpenError) as info:
        b.acquire()
    assert info.value.probing and info.value.retry_in_s == pytest.approx(60.0)  # the oldest probe's max wait
    assert "half-open" in str(info.value)
    b.record_success(first)
    third = b.acquire()
    with pytest.raises(BreakerOpenError):
        b.acquire()
    b.record_success(second)
    assert b.state is HALF_OPEN  # 2 of 3 successes
    b.record_success(third)
    assert b.state is CLOSED


def test_successes_close_and_clear_the_counts(clock):
    b = make(clock, half_open_successes=2)
    trip(b)
    clock.advance(30)
    succeed(b)
    assert b.state is HALF_OPEN
    succeed(b)
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.consecutive_failures == 0 and snap.calls_in_window == 0
    assert snap.opened_at_wall is None and snap.failure_count == 3 and snap.success_count == 2


def test_any_failure_in_half_open_reopens(clock):
    b = make(clock, half_open_max_calls=2, half_open_successes=1)
    trip(b)
    clock.advance(30)
    slow_probe, bad_probe = b.acquire(), b.acquire()
    clock.advance(5)
    b.record_failure(bad_probe, DependencyFailed("still broken"))
    snap = b.snapshot()
    assert snap.state is OPEN and snap.next_probe_in_s == 30.0 and snap.opened_at_wall == clock.wall()
    clock.advance(30)
    b.record_success(slow_probe)  # from before the reopening: must not close the new half-open
    assert b.state is HALF_OPEN


def test_hung_probe_counts_failed_and_frees_the_slot(clock):
    b = make(clock, half_open_max_calls=1, half_open_max_wait_s=60)
    trip(b)
    clock.advance(30)
    hung = b.acquire()
    clock.advance(59)
    assert b.state is HALF_OPEN
    clock.advance(1)
    snap = b.snapshot()
    assert snap.state is OPEN and snap.failure_count == 4
    assert hung.settled
    b.record_success(hung)  # comes back at last: ignored
    assert b.state is OPEN and b.snapshot().success_count == 0
    clock.advance(30)
    b.record_success(b.acquire())  # the slot is free again
    assert b.state is CLOSED


def test_probe_returning_after_max_wait_is_still_failed(clock):
    b = make(clock, half_open_max_wait_s=60)
    trip(b)
    clock.advance(30)
    probe = b.acquire()
    clock.advance(61)  # nobody looked in between
    b.record_success(probe)
    assert b.state is OPEN


def test_stale_permit_from_closed_does_not_count_as_probe(clock):
    b = make(clock)
    early = b.acquire()
    trip(b)
    clock.advance(30)
    b.record_success(early)
    snap = b.snapshot()
    assert snap.state is HALF_OPEN and snap.success_count == 1  # counted in totals, not as a probe


def test_permits_are_settled_once_and_belong_to_their_breaker(clock):
    b, other = make(clock, failure_rate=None), make(clock, name="ffmpeg")
    p = b.acquire()
    b.record_failure(p, DependencyFailed("x"))
    b.record_failure(p, DependencyFailed("x"))
    b.release(p)
    assert b.snapshot().failure_count == 1
    with pytest.raises(ValueError, match="ffmpeg"):
        b.record_success(other.acquire())


def test_call_passes_arguments_and_returns(clock):
    b = make(clock)
    assert b.call(lambda a, *, k: a + k, 2, k=3) == 5
    assert b.snapshot().success_count == 1


# --- concurrency ----------------------------------------------------------------


def test_lock_is_not_held_during_the_call(clock):
    b = make(clock)
    started, release = threading.Event(), threading.Event()

    def blocking():
        started.set()
        assert release.wait(5), "safety timeout"
        return "late"

    results: list = []
    worker = threading.Thread(target=lambda: results.append(b.call(blocking)))
    worker.start()
    try:
        assert started.wait(5)
        other = threading.Thread(target=lambda: results.append(b.acquire()))
        other.start()
        other.join(2)
        assert not other.is_alive(), "acquire() blocked while another call was running"
        assert b.snapshot().state is CLOSED
    finally:
        release.set()
        worker.join(5)
    assert "late" in results and b.snapshot().success_count == 1


# --- listeners ------------------------------------------------------------------


def test_listeners_see_each_transition_in_order_outside_the_lock(clock):
    b = make(clock)
    seen: list = []

    def listener(name, old, new, snap):
        t = threading.Thread(target=b.snapshot)  # would deadlock if called under the lock
        t.start()
        t.join(2)
        seen.append((name, old, new, snap.state, not t.is_alive()))

    b.add_listener(listener)
    trip(b)
    clock.advance(30)
    fail(b)
    clock.advance(30)
    succeed(b)
    assert seen == [
        ("demucs", CLOSED, OPEN, OPEN, True),
        ("demucs", OPEN, HALF_OPEN, HALF_OPEN, True),
        ("demucs", HALF_OPEN, OPEN, OPEN, True),
        ("demucs", OPEN, HALF_OPEN, HALF_OPEN, True),
        ("demucs", HALF_OPEN, CLOSED, CLOSED, True),
    ]
    b.remove_listener(listener)
    trip(b)
    assert len(seen) == 5


def test_a_failing_listener_does_not_break_the_breaker(clock, caplog):
    b = make(clock)
    calls: list = []
    b.add_listener(lambda *a: 1 / 0)
    b.add_listener(lambda name, old, new, snap: calls.append(new))
    with caplog.at_level(logging.ERROR):
        trip(b)
    assert calls == [OPEN] and "listener" in caplog.text


# --- manual control -------------------------------------------------------------


def test_reset_closes_and_forgets(clock):
    b = make(clock)
    seen: list = []
    b.add_listener(lambda name, old, new, snap: seen.append((old, new)))
    trip(b)
    b.reset()
    snap = b.snapshot()
    assert snap.state is CLOSED and snap.failure_count == 0 and snap.consecutive_failures == 0
    assert seen == [(CLOSED, OPEN), (OPEN, CLOSED)]
    b.release(b.acquire())


def test_force_open_stays_open_until_reset(clock):
    b = make(clock)
    seen: list = []
    b.add_listener(lambda name, old, new, snap: seen.append((new, snap.forced)))
    b.force_open()
    clock.advance(10_000)
    snap = b.snapshot()
    assert snap.state is OPEN and snap.forced and snap.next_probe_in_s is None
    with pytest.raises(BreakerOpenError) as info:
        b.acquire()
    assert info.value.retry_in_s is None and info.value.retry_at is None and "forced" in str(info.value)
    assert seen == [(OPEN, True)]
    b.reset()
    assert b.state is CLOSED and not b.snapshot().forced


def test_disabled_lets_everything_through_and_records_nothing(clock):
    b = make(clock)
    trip(b)
    b.disable()
    for _ in range(5):
        fail(b)
        succeed(b)
    snap = b.snapshot()
    assert snap.disabled and snap.state is OPEN and snap.failure_count == 3 and snap.success_count == 0
    b.enable()
    with pytest.raises(BreakerOpenError):
        b.acquire()
    b.reset()
    b.disable()
    for _ in range(10):
        fail(b)
    assert b.state is CLOSED


# --- persistence ----------------------------------------------------------------


def test_creating_a_breaker_never_writes_state(clock):
    store = MemoryBreakerStore()
    make(clock, store)
    assert store.writes == 0 and store.load("demucs") is None
    fail(make(clock, store))
    writes = store.writes
    assert writes == 1
    make(clock, store)  # loading existing state does not write either
    assert store.writes == writes


def test_state_round_trips_through_the_store(clock):
    store = MemoryBreakerStore()
    b = make(clock, store, cooldown_s=30)
    succeed(b)
    trip(b)
    opened_at = b.snapshot().opened_at_wall
    saved = store.load("demucs")
    assert saved["state"] == "open" and saved["opened_at_wall"] == opened_at
    clock.advance(10)
    again = make(clock, store, cooldown_s=30).snapshot()
    assert again.state is OPEN and again.opened_at_wall == opened_at
    assert again.next_probe_in_s == pytest.approx(20.0)
    assert (again.failure_count, again.success_count, again.consecutive_failures) == (3, 1, 3)
    assert again.calls_in_window == 4 and again.failure_rate == 0.75
    clock.advance(20)
    assert make(clock, store).state is HALF_OPEN


def test_reload_clamps_an_open_time_in_the_future(clock):
    store = MemoryBreakerStore()
    future = clock.wall() + 3600  # saved by a machine whose clock was an hour ahead
    store.save("demucs", {"version": 1, "state": "open", "opened_at_wall": future, "open_until_wall": future + 30,
                          "failure_count": 3, "success_count": 0, "consecutive_failures": 3, "window": [1, 1, 1]})
    snap = make(clock, store, cooldown_s=30).snapshot()
    assert snap.state is OPEN and snap.next_probe_in_s == 30.0 and snap.opened_at_wall == clock.wall()


def test_reload_clamps_a_stale_long_cooldown(clock):
    store = MemoryBreakerStore()
    trip(make(clock, store, cooldown_s=3600))
    clock.advance(100)
    assert make(clock, store, cooldown_s=30).snapshot().next_probe_in_s == 30.0
    clock.advance(3490)  # 10 s of the old hour left: shorter than the new cooldown, kept
    assert make(clock, store, cooldown_s=30).snapshot().next_probe_in_s == pytest.approx(10.0)


def test_forced_and_disabled_survive_a_reload(clock):
    store = MemoryBreakerStore()
    b = make(clock, store)
    b.force_open()
    b.disable()
    clock.advance(10_000)
    snap = make(clock, store).snapshot()
    assert snap.state is OPEN and snap.forced and snap.disabled and snap.next_probe_in_s is None


def test_unreadable_saved_state_starts_closed_without_writing(clock, caplog):
    store = MemoryBreakerStore()
    store.save("demucs", {"version": 99, "state": "open"})
    writes = store.writes
    with caplog.at_level(logging.WARNING):
        b = make(clock, store)
    assert b.state is CLOSED and store.writes == writes and "version" in caplog.text


def test_a_failing_store_does_not_stop_the_breaker(clock, caplog):
    class BrokenStore(MemoryBreakerStore):
        def save(self, name, state):
            raise OSError("database is locked")

    b = make(clock, BrokenStore())
    with caplog.at_level(logging.ERROR):
        trip(b)
    assert b.state is OPEN and "could not save" in caplog.text


def test_snapshot_to_dict_is_json(clock):
    b = make(clock)
    trip(b)
    d = json.loads(json.dumps(b.snapshot().to_dict()))
    assert d["state"] == "open" and d["name"] == "demucs" and d["next_probe_in_s"] == 30.0
