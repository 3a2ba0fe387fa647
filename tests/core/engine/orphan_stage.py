"""A worker-side function that starts the Demucs test double in hang mode (for the orphan test)."""

from core.pipeline.separate import separate_demucs
from tests.doubles import fake_demucs_command


def run_hanging_demucs(audio: str, out: str) -> None:
    separate_demucs(audio, out, command=fake_demucs_command(), timeout_s=3600)
