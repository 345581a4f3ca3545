"""The plugin interface: cds_hooks/ is generic, plugins arrive through pluggy (entry points or explicit)."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy
import pytest
from conftest import ROOT

from cds_hooks import ServiceDefinition, hookimpl, hookspecs
from cds_hooks.plugins import collect_services, plugin_manager

CLINICAL_WORDS = ["lupus", "sle", "fasciculation", "twitch", "prednisone", "steroid", "potassium",
                  "magnesium", "creatine", "myositis", "neuropathy", "emg", "loinc", "snomed", "rxnorm",
                  "icd-10", "electrolyte", "patient safety"]


def test_protocol_layer_contains_no_clinical_word():
    """cds_hooks/ may name the product (``lupus-cds``, its ``LUPUS_CDS_`` settings), nothing clinical."""
    for path in sorted((ROOT / "cds_hooks").rglob("*.py")):
        text = re.sub(r"lupus[-_]cds", "product", path.read_text().lower())
        for word in CLINICAL_WORDS:
            assert not re.search(rf"\b{re.escape(word)}\b", text), f"{path.name} mentions {word!r}"


def test_second_plugin_needs_no_change_in_cds_hooks(make_app):
    """The tiny test plugin (tests/tiny_plugin.py) is served with no code in cds_hooks/ naming it."""
    app = make_app()
    assert ("patient-greeter", "patient-view") in app.extensions["cds_hooks"].services
    assert "tiny_plugin" not in "".join(p.read_text() for p in (ROOT / "cds_hooks").rglob("*.py"))


def test_installed_entry_point_registers_the_clinical_plugin():
    pm = plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert "lupus" in names


def test_every_hookspec_has_a_test():
    specs = [name for name in dir(hookspecs) if name.startswith("cds_") and callable(getattr(hookspecs, name))]
    tested = " ".join(p.read_text() for p in Path(__file__).parent.rglob("test_*.py"))
    for name in specs:
        assert name in tested.replace("def test_every_hookspec_has_a_test", ""), name


def test_unknown_hook_implementation_fails_loudly():
    class Typo:
        @hookimpl
        def cds_servics(self, config):
            return []

    with pytest.raises(pluggy.PluginValidationError):
        plugin_manager([Typo()])


def _services_of(*definitions):
    class P:
        @hookimpl
        def cds_services(self, config):
            return list(definitions)

    return collect_services(plugin_manager([P()]), {})


def test_duplicate_service_id_for_a_hook_is_rejected():
    service = ServiceDefinition(id="a", hook="patient-view", description="d", handler=lambda r: [])
    with pytest.raises(ValueError, match="two services"):
        _services_of(service, service)


def test_invalid_prefetch_template_is_rejected_at_startup():
    service = ServiceDefinition(id="a", hook="order-sign", description="d", handler=lambda r: [],
                                prefetch={"meds": "MedicationRequest?_id={{context.draftOrders.id}}"})
    with pytest.raises(ValueError, match="PF-4"):
        _services_of(service)


def test_required_key_must_be_declared():
    service = ServiceDefinition(id="a", hook="patient-view", description="d", handler=lambda r: [],
                                required_prefetch=frozenset({"nope"}))
    with pytest.raises(ValueError, match="undeclared"):
        _services_of(service)


def test_cds_cli_commands_hook_adds_commands():
    import click

    class P:
        @hookimpl
        def cds_cli_commands(self, cli):
            cli.add_command(click.Command("hello", callback=lambda: None))

    group = click.Group()
    plugin_manager([P()]).hook.cds_cli_commands(cli=group)
    assert "hello" in group.commands


def test_cds_sample_request_dirs_hook_collects_paths():
    class P:
        @hookimpl
        def cds_sample_request_dirs(self):
            return ["/tmp/x"]

    assert plugin_manager([P()]).hook.cds_sample_request_dirs() == [["/tmp/x"]]


def test_hookspecs_project_name():
    assert hookspecs.PROJECT == "cds_hooks" and isinstance(hookspecs.hookimpl, pluggy.HookimplMarker)
