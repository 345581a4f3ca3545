"""A wheel built from the repository is a complete install: it carries the fixture patients (setup.py), so
``lupus-cds demo`` and the sandbox's data work from any directory, with no checkout next to them.

The wheel is built from a copy of the sources (so the checkout gets no build/ folder) and installed with
``--no-deps`` into a fresh virtualenv that borrows this interpreter's site-packages for the dependencies
(a ``.pth`` line: the borrowed folder's own ``.pth`` files, such as an editable install of the checkout,
are not run, so ``plugin`` can only come from the wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from plugin import fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "cds_hooks", "plugin", "fixtures")


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """(the venv's bin folder, the wheel's path, an environment without checkout hints)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check", "-w", tmp / "dist",
        source)
    (wheel,) = (tmp / "dist").glob("lupus_cds-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (purelib / "borrowed-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", "--disable-pip-version-check",
        wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LUPUS_CDS_FIXTURES_DIR")}
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return venv / "bin", wheel, env, elsewhere


def test_the_wheel_carries_the_fixtures_the_demo_and_sandbox_read(installed_wheel):
    _, wheel, _, _ = installed_wheel
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for name in fixtures.patient_names():
        assert f"plugin/fixture_files/patients/{name}.json" in names
        for hook in fixtures.HOOKS:
            assert f"plugin/fixture_files/requests/{name}/{hook}.json" in names
            assert f"plugin/fixture_files/requests/{name}/{hook}.no-prefetch.json" in names
            assert f"plugin/fixture_files/expected/{name}/{hook}.json" in names
    assert "plugin/fixture_files/patients/index.json" in names
    assert "plugin/fixture_files/clients.sandbox.json" in names
    assert not any(n.startswith("plugin/fixture_files/") and n.endswith(".py") for n in names), "no build script"


def test_lupus_cds_demo_works_from_another_directory(installed_wheel):
    bin_dir, _, env, elsewhere = installed_wheel
    done = run(bin_dir / "lupus-cds", "demo", cwd=elsewhere, env=env)
    total = len(fixtures.patient_names()) * len(fixtures.HOOKS)
    assert f"All {total} requests give their golden cards" in done.stdout, done.stdout[-2000:]


def test_the_sandbox_reads_its_patients_from_the_installed_package(installed_wheel):
    """What ``lupus-cds sandbox`` loads before it starts its servers: every patient Bundle and request."""
    bin_dir, _, env, elsewhere = installed_wheel
    code = ("import json, plugin; from plugin import fixtures; from datetime import datetime, UTC; "
            "now = datetime.now(UTC); names = fixtures.patient_names(); "
            "[fixtures.load_bundle(n, now=now) for n in names]; "
            "[fixtures.load_request(n, h, prefetch=False, now=now, fhir_server='http://127.0.0.1:1/fhir') "
            "for n in names for h in fixtures.HOOKS]; "
            "print(json.dumps({'plugin': plugin.__file__, 'fixtures': str(fixtures.fixtures_dir()), "
            "'patients': len(names)}))")
    found = json.loads(run(bin_dir / "python", "-c", code, cwd=elsewhere, env=env).stdout)
    venv = bin_dir.parent.resolve()
    assert Path(found["plugin"]).resolve().is_relative_to(venv), found
    assert Path(found["fixtures"]).resolve().is_relative_to(venv), found
    assert found["patients"] == len(fixtures.patient_names())
    assert run(bin_dir / "lupus-cds", "sandbox", "--help", cwd=elsewhere, env=env).stdout.startswith("Usage")
