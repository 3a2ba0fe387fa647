import json
import random

import pytest
import tenacity

from core.resilience.cancel import CancelToken
from core.resilience.clock import FakeClock
from core.resilience.errors import (
    Cancelled,
    DependencyFailed,
    ErrorKind,
    InputError,
    StageTimeout,
    WorkerCrashed,
    classify,
    info_for,
)
from core.resilience.retry import (
    Jitter,
    RetryConfig,
    RetryPolicy,
    capped_exponential,
    compute_delay,
)


class Flaky:
    """Raises the given errors in turn, then returns ``value``; records its calls."""

    def __init__(self, errors, value="ok", clock=None, work_s=0.0):
        self.errors = list(errors)
        self.value = value
        self.calls = []
        self.raised = []
        self.clock = clock
        self.work_s = work_s

    def __call__(self, *args, **kw):
        self.calls.append((args, kw))
        if self.clock is not None:
            self.clock.advance(self.work_s)
        if self.errors:
            exc = self.errors.pop(0)
            self.raised.append(exc)
            raise exc
        return self.value


def cfg(**kw):
    base = dict(max_attempts=5, base_delay_s=1.0, multiplier=2.0, max_delay_s=10.0, jitter=Jitter.NONE)
    base.update(kw)
    return RetryConfig(**base)


# --- delays -----------------------------------------------------------------


def test_no_jitter_is_capped_exponential():
    got = [compute_delay(n, base_delay_s=1.0, multiplier=2.0, max_delay_s=10.0) for n in range(1, 7)]
    assert got == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert compute_delay(3, base_delay_s=0.5, multiplier=3.0, max_delay_s=100.0) == pytest.approx(4.5)


@pytest.mark.parametrize("jitter", [Jitter.FULL, Jitter.EQUAL])
def test_jitter_bounds_over_many_seeds(jitter):
    for attempt in (1, 2, 3, 5, 8):
        d = capped_exponential(attempt, 1.0, 2.0, 30.0)
        lo = 0.0 if jitter is Jitter.FULL else d / 2
        values = [
            compute_delay(attempt, base_delay_s=1.0, multiplier=2.0, max_delay_s=30.0, jitter=jitter, rng=random.Random(seed))
            for seed in range(400)
        ]
        assert all(lo <= v <= d for v in values), (attempt, min(values), max(values))
        # It really is spread over the range, not a constant.
        span = d - lo
        assert min(values) < lo + 0.1 * span
        assert max(values) > d - 0.1 * span


def test_jitter_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        compute_delay(2, base_delay_s=1.0, multiplier=2.0, max_delay_s=10.0, jitter=Jitter.FULL)


@pytest.mark.parametrize("attempt", [64, 1025, 10_000, 10**18])
@pytest.mark.parametrize("jitter", list(Jitter))
def test_exponent_is_capped_at_huge_attempts(attempt, jitter):
    d = compute_delay(attempt, base_delay_s=0.5, multiplier=10.0, max_delay_s=45.0, jitter=jitter, rng=random.Random(1))
    assert 0.0 <= d <= 45.0
    if jitter is Jitter.NONE:
        assert d == 45.0
    if jitter is Jitter.EQUAL:
        assert d >= 22.5


def test_delay_for_matches_compute_delay():
    c = cfg(jitter=Jitter.EQUAL, base_delay_s=2.0, multiplier=3.0, max_delay_s=50.0)
    for n in range(1, 8):
        assert c.delay_for(n, random.Random(n)) == compute_delay(
            n, base_delay_s=2.0, multiplier=3.0, max_delay_s=50.0, jitter=Jitter.EQUAL, rng=random.Random(n)
        )
    policy = RetryPolicy(c, rng=random.Random(0))
    assert policy.delay_for(10_000, random.Random(3)) == c.delay_for(10_000, random.Random(3))


def test_zero_base_delay_means_no_wait():
    assert compute_delay(5, base_delay_s=0.0, multiplier=2.0, max_delay_s=0.0, jitter=Jitter.FULL, rng=random.Random()) == 0.0


# --- config -----------------------------------------------------------------


def test_default_retry_on_is_the_retryable_kinds():
    c = RetryConfig()
    assert c.retry_on == {
        ErrorKind.DEPENDENCY_FAILED,
        ErrorKind.TIMEOUT,
        ErrorKind.WORKER_CRASH,
        ErrorKind.OUT_OF_MEMORY,
    }
    assert all(info_for(k, "x").retryable for k in c.retry_on)


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(max_attempts=0), "max_attempts"),
        (dict(max_attempts=2.5), "max_attempts"),
        (dict(base_delay_s=-1.0), "base_delay_s"),
        (dict(multiplier=0.5), "multiplier"),
        (dict(max_delay_s=0.5, base_delay_s=1.0), "max_delay_s"),
        (dict(max_delay_s=float("inf")), "max_delay_s"),
        (dict(jitter="sometimes"), "jitter"),
        (dict(retry_on=frozenset({ErrorKind.CANCELLED})), "retry_on"),
        (dict(retry_on=frozenset({"no-such-kind"})), "retry_on"),
        (dict(deadline_s=0.0), "deadline_s"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises((ValueError, TypeError), match=field):
        RetryConfig(**kw)


def test_config_round_trips_through_json():
    c = RetryConfig(
        max_attempts=4,
        base_delay_s=0.25,
        multiplier=3.0,
        max_delay_s=12.0,
        jitter=Jitter.FULL,
        retry_on=frozenset({ErrorKind.TIMEOUT, ErrorKind.WORKER_CRASH}),
        deadline_s=90.0,
    )
    d = json.loads(json.dumps(c.to_dict()))
    assert d["jitter"] == "full" and d["retry_on"] == ["timeout", "worker-crash"]
    assert RetryConfig.from_dict(d) == c
    assert RetryConfig.from_dict({}) == RetryConfig()
    assert RetryConfig(jitter="equal", retry_on=["timeout"]).jitter is Jitter.EQUAL
    with pytest.raises(ValueError, match="max_atempts"):
        RetryConfig.from_dict({"max_atempts": 3})


# --- policy -----------------------------------------------------------------


def test_success_first_time_passes_arguments_and_never_sleeps(clock):
    fn = Flaky([], value=42)
    assert RetryPolicy(cfg(), clock=clock).call(fn, 1, 2, key="v") == 42
    assert fn.calls == [((1, 2), {"key": "v"})]
    assert clock.sleeps == []


def test_non_retryable_kind_stops_at_once(clock):
    err = InputError("not audio")
    fn = Flaky([err, err])
    with pytest.raises(InputError) as ei:
        RetryPolicy(cfg(), clock=clock).call(fn)
    assert ei.value is err
    assert len(fn.calls) == 1
    assert clock.sleeps == []


def test_unnamed_kind_is_not_retried(clock):
    fn = Flaky([StageTimeout("slow")])
    policy = RetryPolicy(cfg(retry_on=frozenset({ErrorKind.WORKER_CRASH})), clock=clock)
    with pytest.raises(StageTimeout):
        policy.call(fn)
    assert len(fn.calls) == 1 and clock.sleeps == []


def test_retries_then_succeeds_sleeping_the_computed_delays(clock):
    c = cfg(jitter=Jitter.FULL, base_delay_s=2.0, max_delay_s=60.0)
    fn = Flaky([DependencyFailed("demucs"), WorkerCrashed("died", exitcode=-9), StageTimeout("slow")], value="done")
    policy = RetryPolicy(c, clock=clock, rng=random.Random(11))
    assert policy.call(fn) == "done"
    twin = random.Random(11)
    expected = [c.delay_for(n, twin) for n in (1, 2, 3)]
    assert clock.sleeps == expected
    assert len(fn.calls) == 4
    assert clock.monotonic() == pytest.approx(1000.0 + sum(expected))


def test_on_retry_hook_gets_attempt_delay_and_error(clock):
    seen = []
    fn = Flaky([DependencyFailed("demucs exited 1"), StageTimeout("took too long")], value=7)
    policy = RetryPolicy(cfg(), clock=clock, on_retry=lambda a, d, e: seen.append((a, d, e)))
    assert policy.call(fn) == 7
    assert [(a, d, e.kind, e.reason) for a, d, e in seen] == [
        (1, 1.0, ErrorKind.DEPENDENCY_FAILED, "demucs exited 1"),
        (2, 2.0, ErrorKind.TIMEOUT, "took too long"),
    ]
    assert all(isinstance(a, int) and isinstance(d, float) for a, d, _ in seen)
    assert seen[0][2] == classify(fn.raised[0])


def test_exhausted_raises_the_real_last_error_not_retry_error(clock):
    errors = [StageTimeout(f"slow #{i}") for i in range(3)]
    fn = Flaky(list(errors))
    with pytest.raises(StageTimeout) as ei:
        RetryPolicy(cfg(max_attempts=3), clock=clock).call(fn)
    assert ei.value is errors[-1]
    assert not isinstance(ei.value.__context__, tenacity.RetryError)
    assert not isinstance(ei.value.__cause__, tenacity.RetryError)
    assert len(fn.calls) == 3
    assert clock.sleeps == [1.0, 2.0]


def test_single_attempt_never_sleeps_and_raises_real_error(clock):
    err = DependencyFailed("ffmpeg failed")
    with pytest.raises(DependencyFailed) as ei:
        RetryPolicy(cfg(max_attempts=1), clock=clock).call(Flaky([err]))
    assert ei.value is err and clock.sleeps == []


class CancellingClock(FakeClock):
    """A clock on which the cancel arrives while the policy is in its backoff sleep."""

    def sleep(self, seconds, cancel=None):
        assert cancel is not None
        cancel.cancel("user pressed stop")
        return super().sleep(seconds, cancel)


def test_cancel_during_backoff_raises_cancelled_at_once():
    clock = CancellingClock()
    token = CancelToken()
    fn = Flaky([DependencyFailed("a"), DependencyFailed("b")], value="never")
    start = clock.monotonic()
    with pytest.raises(Cancelled, match="user pressed stop"):
        RetryPolicy(cfg(base_delay_s=5.0, max_delay_s=50.0), clock=clock).call(fn, cancel=token)
    assert len(fn.calls) == 1  # no further attempt
    assert clock.sleeps == [5.0]  # one backoff was entered...
    assert clock.monotonic() == start  # ...and cut short, not slept through


def test_cancel_before_call_skips_the_attempt(clock):
    token = CancelToken()
    token.cancel("batch stopped")
    fn = Flaky([])
    with pytest.raises(Cancelled, match="batch stopped"):
        RetryPolicy(cfg(), clock=clock).call(fn, cancel=token)
    assert fn.calls == [] and clock.sleeps == []


def test_cancel_token_is_not_passed_to_fn(clock):
    fn = Flaky([StageTimeout("x")])
    RetryPolicy(cfg(), clock=clock).call(fn, "a", cancel=CancelToken())
    assert fn.calls == [(("a",), {}), (("a",), {})]


@pytest.mark.parametrize("exc", [Cancelled("stop"), KeyboardInterrupt()])
def test_cancellation_and_ctrl_c_are_never_retried(clock, exc):
    # Even a classifier that calls everything retryable cannot make them retry.
    everything_fails = lambda e: info_for(ErrorKind.DEPENDENCY_FAILED, str(e))  # noqa: E731
    fn = Flaky([exc, exc])
    with pytest.raises(type(exc)):
        RetryPolicy(cfg(), clock=clock, classifier=everything_fails).call(fn)
    assert len(fn.calls) == 1 and clock.sleeps == []


def test_deadline_stops_before_a_sleep_would_cross_it(clock):
    # Each attempt takes 1 s. Timeline: fail@1, sleep 10 -> 11; fail@12, sleep 20 -> 32;
    # fail@33, next sleep 40 would end at 73 > 35: give up now.
    start = clock.monotonic()
    fn = Flaky([StageTimeout(f"#{i}") for i in range(10)], clock=clock, work_s=1.0)
    c = cfg(max_attempts=10, base_delay_s=10.0, max_delay_s=100.0, deadline_s=35.0)
    with pytest.raises(StageTimeout, match="#2"):
        RetryPolicy(c, clock=clock).call(fn)
    assert clock.sleeps == [10.0, 20.0]
    assert len(fn.calls) == 3
    assert clock.monotonic() - start == pytest.approx(33.0)
    assert clock.monotonic() - start < c.deadline_s


def test_deadline_is_measured_on_the_injected_clock(clock):
    # Work that "takes" 100 fake seconds exhausts a 50 s deadline after one attempt,
    # although no real time passes.
    fn = Flaky([StageTimeout("a"), StageTimeout("b")], clock=clock, work_s=100.0)
    with pytest.raises(StageTimeout, match="a"):
        RetryPolicy(cfg(deadline_s=50.0), clock=clock).call(fn)
    assert len(fn.calls) == 1 and clock.sleeps == []


def test_broken_classifier_does_not_hide_the_real_error(clock):
    def broken(exc):
        raise RuntimeError("classifier bug")

    err = StageTimeout("slow")
    with pytest.raises(StageTimeout) as ei:
        RetryPolicy(cfg(), clock=clock, classifier=broken).call(Flaky([err]))
    assert ei.value is err and clock.sleeps == []


def test_huge_attempt_counts_run_without_overflow(clock):
    fn = Flaky([WorkerCrashed("boom")] * 2000, value="finally")
    c = cfg(max_attempts=3000, base_delay_s=0.001, multiplier=10.0, max_delay_s=0.5)
    assert RetryPolicy(c, clock=clock).call(fn) == "finally"
    assert len(clock.sleeps) == 2000 and max(clock.sleeps) == 0.5
