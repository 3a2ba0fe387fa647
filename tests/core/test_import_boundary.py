"""core/ must stay usable without Qt: importing every core module loads no Qt."""

import pkgutil
import subprocess
import sys

import core


def _core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(core.__path__, prefix="core.")]


def test_core_modules_exist():
    assert "core.resilience.errors" in _core_modules()


def test_importing_core_loads_no_qt():
    code = (
        "import importlib, sys\n"
        f"for name in {_core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'PySide6', 'shiboken6', 'pyqtgraph', 'app'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core pulled in Qt/app modules: {out.stdout.strip()}"
