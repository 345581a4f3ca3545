"""The one build step ``pyproject.toml`` cannot express: a wheel also carries the fixture patients.

``lupus-cds demo`` and ``lupus-cds sandbox`` read ``fixtures/`` (patient Bundles, hook requests, expected
cards). The folder stays at the repository root, where ``fixtures/build.py`` writes it and where a
checkout or an editable install reads it in place; a built wheel gets a copy as package data,
``plugin/fixture_files/``, which :func:`plugin.fixtures.fixtures_dir` looks at first.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: what the demo and the sandbox read (build.py, testbed/ and spec-examples/ serve the tests only)
SHIPPED = ("README.md", "clients.sandbox.json", "patients", "requests", "expected")


class BuildPyWithFixtures(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not (FIXTURES / "patients").is_dir():
            return  # editable: read in place; a source tree without fixtures (the container image): none
        target = Path(self.build_lib) / "plugin" / "fixture_files"
        shutil.rmtree(target, ignore_errors=True)
        for name in SHIPPED:
            source = FIXTURES / name
            if source.is_dir():
                shutil.copytree(source, target / name)
            elif source.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithFixtures})
