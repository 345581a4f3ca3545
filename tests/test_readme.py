"""The README documents every setting and its commands stay the ones CI runs."""

from __future__ import annotations

import re

from conftest import ROOT

from cds_hooks import config

README = (ROOT / "README.md").read_text()


def all_setting_names() -> set[str]:
    names = set(config.SETTINGS)
    from plugin import settings as plugin_settings

    names |= {spec.key for spec in plugin_settings.SETTINGS.values()}
    return names


def test_every_setting_is_in_the_configuration_table():
    missing = sorted(name for name in all_setting_names() if f"`{name}`" not in README)
    assert not missing, f"README configuration table lacks {missing}"


def test_every_documented_setting_exists():
    documented = set(re.findall(r"`(LUPUS_CDS_[A-Z0-9_]+)`", README))
    unknown = sorted(documented - all_setting_names())
    assert not unknown, f"README documents settings the code does not read: {unknown}"


def test_each_setting_is_described_as_the_code_describes_it():
    """The table is written from the descriptions in the code: a changed default or meaning shows here."""
    from plugin import settings as plugin_settings

    rows = {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\| `(LUPUS_CDS_[A-Z0-9_]+)` \|[^|]*\|(.*)\|\s*$", README, re.MULTILINE)}
    described = {name: description for name, (_, description) in config.SETTINGS.items()}
    described |= {spec.key: spec.description for spec in plugin_settings.SETTINGS.values()}
    drifted = sorted(name for name, description in described.items() if rows.get(name) != description)
    assert not drifted, f"README rows differ from the code's descriptions: {drifted}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "deploy/bootstrap test" in README and "exec deploy/bootstrap test" in ci
    assert "deploy/bootstrap serve" in README
