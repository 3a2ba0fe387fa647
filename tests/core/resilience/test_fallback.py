import pytest

from core.resilience.errors import (
    Cancelled,
    DependencyFailed,
    DependencyMissing,
    ErrorKind,
    InputError,
    StageTimeout,
    info_for,
)
from core.resilience.fallback import DEFAULT_FALLBACK_KINDS, Fallback
from core.resilience.retry import Jitter, RetryConfig, RetryPolicy


class Recorder:
    def __init__(self, result=None, error=None):
        self.result = result
        self.error = error
        self.calls = []

    def __call__(self, *args, **kw):
        self.calls.append((args, kw))
        if self.error is not None:
            raise self.error
        return self.result


def demucs_separate(path):  # a named primary, for the reason text
    raise DependencyFailed("demucs exited with status 1")


def test_primary_success_is_not_degraded():
    primary, alt = Recorder("stems"), Recorder("hpss")
    r = Fallback(primary, alt).call("song.wav", sr=44100)
    assert (r.value, r.degraded, r.reason, r.error, r.used) == ("stems", False, "", None, "primary")
    assert primary.calls == [(("song.wav",), {"sr": 44100})]
    assert alt.calls == []


def test_named_kind_takes_the_alternative_and_says_why():
    alt = Recorder("hpss stems")
    r = Fallback(demucs_separate, alt, alternative_name="hpss").call("song.wav")
    assert r.value == "hpss stems" and r.degraded and r.used == "alternative"
    assert r.error.kind is ErrorKind.DEPENDENCY_FAILED
    assert r.error.reason == "demucs exited with status 1"
    assert "demucs_separate" in r.reason and "dependency-failed" in r.reason
    assert "demucs exited with status 1" in r.reason and "hpss" in r.reason
    assert alt.calls == [(("song.wav",), {})]


@pytest.mark.parametrize("kind", sorted(DEFAULT_FALLBACK_KINDS, key=lambda k: k.value))
def test_every_default_kind_triggers(kind):
    from core.resilience.errors import StaveError

    r = Fallback(Recorder(error=StaveError("x", kind=kind)), Recorder(1)).call()
    assert r.degraded and r.error.kind is kind


def test_unnamed_kind_propagates():
    err = StageTimeout("too slow")
    alt = Recorder("hpss")
    fb = Fallback(Recorder(error=err), alt, on_kinds=frozenset({ErrorKind.DEPENDENCY_MISSING}))
    with pytest.raises(StageTimeout) as ei:
        fb.call()
    assert ei.value is err and alt.calls == []


def test_a_bug_propagates_by_default():
    alt = Recorder("hpss")
    with pytest.raises(ZeroDivisionError):
        Fallback(Recorder(error=ZeroDivisionError("oops")), alt).call()
    assert alt.calls == []


def test_input_kind_propagates_by_default_but_can_be_named():
    alt = Recorder("hpss")
    with pytest.raises(InputError):
        Fallback(Recorder(error=InputError("truncated file")), alt).call()
    assert alt.calls == []
    named = Fallback(Recorder(error=InputError("truncated file")), alt, on_kinds={ErrorKind.INPUT_CORRUPT})
    assert named.call().used == "alternative"


@pytest.mark.parametrize("exc", [Cancelled("stopped"), KeyboardInterrupt()])
def test_cancellation_never_falls_back(exc):
    alt = Recorder("hpss")
    says_dependency = lambda e: info_for(ErrorKind.DEPENDENCY_FAILED, "x")  # noqa: E731
    with pytest.raises(type(exc)):
        Fallback(Recorder(error=exc), alt, classifier=says_dependency).call()
    assert alt.calls == []
    with pytest.raises(ValueError, match="cancelled"):
        Fallback(Recorder(), alt, on_kinds={ErrorKind.CANCELLED})


def test_alternative_failing_raises_its_error_chained_from_the_primary():
    primary_err = DependencyMissing("demucs not installed")
    alt_err = RuntimeError("hpss failed too")
    with pytest.raises(RuntimeError) as ei:
        Fallback(Recorder(error=primary_err), Recorder(error=alt_err)).call()
    assert ei.value is alt_err
    assert ei.value.__cause__ is primary_err


def test_fallback_around_retry(clock):
    """Policy order: fallback -> retry. Retries are spent first, then the alternative is taken."""
    primary = Recorder(error=DependencyFailed("demucs crashed"))
    policy = RetryPolicy(RetryConfig(max_attempts=3, base_delay_s=1.0, jitter=Jitter.NONE), clock=clock)
    fb = Fallback(lambda path: policy.call(primary, path), Recorder("hpss"), primary_name="demucs")
    r = fb.call("a.wav")
    assert r.used == "alternative" and r.error.reason == "demucs crashed"
    assert len(primary.calls) == 3 and clock.sleeps == [1.0, 2.0]
