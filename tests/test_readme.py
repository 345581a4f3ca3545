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


# --- each fact in one place: the docs follow the code ------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.md")), *sorted((ROOT / "fixtures").rglob("README.md"))]


def template_resource_types() -> set[str]:
    """The FHIR resource types the installed plugin's prefetch templates search or read."""
    from cds_hooks.plugins import collect_services, plugin_manager

    services = collect_services(plugin_manager(), config.load(environ={}))
    return {template.split("?", 1)[0].split("/", 1)[0]
            for service in services.values() for template in service.prefetch.values()}


def test_the_smart_scopes_in_the_docs_cover_every_resource_type_the_templates_read():
    """A missing scope means 403 from the EHR's FHIR server and 412 from the service: the README's
    registration scopes and the SMART.md example both name one ``system/<type>.rs`` per type read."""
    smart = (ROOT / "deploy" / "SMART.md").read_text()
    example = re.search(r'"scope": "([^"]+)"', smart).group(1)
    readme = re.search(r"scopes `((?:system/\w+\.rs\s*)+)`", README).group(1)
    documented = {name: set(re.findall(r"system/(\w+)\.rs", text)) for name, text in
                  (("README.md", readme), ("deploy/SMART.md", example))}
    needed = template_resource_types()
    assert "Patient" in needed and "Condition" in needed
    for name, types in documented.items():
        assert needed <= types, f"{name} lacks scopes for {sorted(needed - types)}"
    assert documented["README.md"] == documented["deploy/SMART.md"], "the two lists differ"


def test_paths_the_docs_name_exist():
    """No reference to a file that is not in the repository (TESTBED.md, a moved gunicorn config, ...)."""
    pattern = re.compile(r"(?:\]\(|`)\.?/?((?:cds_hooks|plugin|tests|fixtures|deploy|\.ci)/[\w./-]*)")
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        missing += [f"{doc.relative_to(ROOT)}: {path}" for path in pattern.findall(text)
                    if not (ROOT / path.rstrip("/")).exists()]
        missing += [f"{doc.relative_to(ROOT)}: {name}" for name in re.findall(r"(?<![\w/.-])([\w-]+\.md)", text)
                    if not list(ROOT.glob(f"**/{name}"))]
        missing += [f"{doc.relative_to(ROOT)}: a path of one machine, {path}"
                    for path in re.findall(r"(?<![\w.])/work/\S*", text)]
    assert not missing, missing


def test_the_docker_context_names_only_files_that_exist():
    lines = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    included = [line[1:] for line in lines if line.startswith("!")]
    assert included
    for pattern in included:
        assert list(ROOT.glob(pattern)), f"deploy/Dockerfile.dockerignore names {pattern}, which matches nothing"
    copied = re.findall(r"^COPY (?!--)(.+) \S+$", (ROOT / "deploy" / "Dockerfile").read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
