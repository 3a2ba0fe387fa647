"""`stave health`, `stave gui` and the subcommand registry, through core.cli.main."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import pytest

import core.cli as cli
from core.resilience.health import CheckOutcome, HealthCheck, HealthRegistry, HealthStatus, default_registry


def _registry_with(*checks: HealthCheck):
    def factory(out_dir=None) -> HealthRegistry:
        registry = HealthRegistry(out_dir=out_dir)
        for check in checks:
            registry.register(check)
        return registry

    return factory


def _outcome(status: HealthStatus, details: str = "") -> CheckOutcome:
    return CheckOutcome(status, details=details)


def test_health_json_lists_every_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    code = cli.main(["health", "--json", "--out", str(tmp_path / "out")])
    data = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in data["checks"]]
    assert names == default_registry(out_dir=tmp_path).names()
    assert "output-folder" in names
    statuses = {s.value for s in HealthStatus}
    for c in data["checks"]:
        assert c["status"] in statuses
        assert {"version", "details", "unlocks", "install_hint", "required", "latency_s", "checked_at"} <= c.keys()
    assert data["ok"] is (code == 0)
    assert code == (0 if data["ok"] else 1)
    assert data["ok"], json.dumps(data, indent=1)  # this machine has every required piece


def test_health_exit_1_and_text_when_required_check_fails(monkeypatch, capsys):
    monkeypatch.setattr(
        cli,
        "default_registry",
        _registry_with(
            HealthCheck("nice-to-have", lambda: _outcome(HealthStatus.MISSING, "absent"), required=False,
                        install_hint="pip install nice"),
            HealthCheck("fine", lambda: _outcome(HealthStatus.OK, "works")),
            HealthCheck("decoder", lambda: _outcome(HealthStatus.MISSING, "not installed"),
                        install_hint="pip install decoder"),
        ),
    )
    assert cli.main(["health"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("Stave health: NOT READY")
    assert text.index("decoder") < text.index("nice-to-have") < text.index("fine")
    assert "pip install decoder" in text


def test_health_exit_1_on_required_error_and_0_on_optional_missing(monkeypatch, capsys):
    monkeypatch.setattr(cli, "default_registry", _registry_with(HealthCheck("x", lambda: 1 / 0)))
    assert cli.main(["health", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["checks"][0]["status"] == "error"
    monkeypatch.setattr(
        cli,
        "default_registry",
        _registry_with(HealthCheck("opt", lambda: _outcome(HealthStatus.MISSING), required=False)),
    )
    assert cli.main(["health"]) == 0


def test_health_passes_out_dir(monkeypatch, tmp_path, capsys):
    seen = []

    def factory(out_dir=None):
        seen.append(out_dir)
        return HealthRegistry(out_dir=out_dir)

    monkeypatch.setattr(cli, "default_registry", factory)
    assert cli.main(["health", "--out", str(tmp_path)]) == 0
    assert seen == [str(tmp_path)]
    assert capsys.readouterr().out.startswith("Stave health: all checks ok")


def test_usage_errors_exit_2(capsys):
    assert cli.main(["health", "--bogus"]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert "usage: stave" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0


@pytest.fixture
def fake_app(monkeypatch):
    calls: list[list[str]] = []
    app_pkg = types.ModuleType("app")
    app_main = types.ModuleType("app.main")
    app_main.main = lambda argv: calls.append(list(argv)) or 7
    monkeypatch.setitem(sys.modules, "app", app_pkg)
    monkeypatch.setitem(sys.modules, "app.main", app_main)
    return calls


def test_gui_passes_paths_and_screenshot(fake_app):
    assert cli.main(["gui", "a.wav", "songs/", "--screenshot", "shot.png"]) == 7
    assert fake_app == [["a.wav", "songs/", "--screenshot", "shot.png"]]


def test_no_subcommand_opens_the_window(fake_app):
    assert cli.main([]) == 7
    assert fake_app == [[]]


def test_gui_without_app_says_why(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "app.main", None)  # import fails
    assert cli.main(["gui"]) == 1
    assert "window cannot start" in capsys.readouterr().err


def test_main_sets_numba_cache_dir_when_unset(monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", "placeholder")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert cli.main(["--version"]) == 0
    assert os.environ["NUMBA_CACHE_DIR"].endswith("numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/mine")
    cli.main(["--version"])
    assert os.environ["NUMBA_CACHE_DIR"] == "/mine"


def _echo_command(name: str) -> cli.Subcommand:
    def configure(p: argparse.ArgumentParser) -> None:
        p.add_argument("dir")

    return cli.Subcommand(name=name, help="test", configure=configure, run=lambda a: len(a.dir))


def test_added_subcommand_modules_join_the_parser(monkeypatch):
    module = types.ModuleType("stave_test_cmd")
    module.COMMAND = _echo_command("status")
    monkeypatch.setitem(sys.modules, "stave_test_cmd", module)
    commands = cli.load_commands(["stave_test_cmd"])
    assert [c.name for c in commands] == ["gui", "health", "status"]
    args = cli.build_parser(commands).parse_args(["status", "abcd"])
    assert args._run(args) == 4


def test_subcommand_registry_rejects_bad_entries(monkeypatch):
    monkeypatch.setitem(sys.modules, "stave_bad_cmd", types.ModuleType("stave_bad_cmd"))
    with pytest.raises(TypeError, match="COMMAND"):
        cli.load_commands(["stave_bad_cmd"])
    with pytest.raises(ValueError, match="two subcommands"):
        cli.build_parser([_echo_command("x"), _echo_command("x")])
    with pytest.raises(ValueError, match="Subcommand.name"):
        _echo_command("--x")
