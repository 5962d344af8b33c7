"""Every module of the installed package imports on its own, in a fresh interpreter (no import cycles,
no module that only works after another one happened to be imported)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys


def test_every_module_imports_alone_in_a_fresh_interpreter():
    import bgvid.configs
    import bgvid.kernels

    # bgvid.kernels and bgvid.configs live in their own folders (package-dir mapping): walk each
    roots = [(bgvid.__path__, "bgvid."), (bgvid.kernels.__path__, "bgvid.kernels."),
             (bgvid.configs.__path__, "bgvid.configs.")]
    names = sorted({m.name for path, prefix in roots for m in pkgutil.walk_packages(path, prefix)}
                   | {"bgvid.kernels", "bgvid.configs"})
    assert "bgvid.cli.farm" in names and "bgvid.kernels._backend" in names, names
    script = (
        "import importlib, subprocess, sys\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    if r.returncode:\n"
        "        bad.append((name, (r.stderr.strip().splitlines() or ['?'])[-1]))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_bgvid_loads_no_model_and_starts_no_thread():
    code = ("import threading, sys; before = threading.active_count(); import bgvid, bgvid.cli.main; "
            "assert threading.active_count() == before, threading.enumerate(); "
            "assert 'onnxruntime' not in sys.modules and 'cupy' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
