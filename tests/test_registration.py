"""What an operator registers with an EHR (deploy/REGISTRATION.md) and how HTTPS is put in front of the
service (deploy/README.md, deploy/k8s/ingress.yaml): the documents are checked against the service they
describe, so a new hook, resource type or card link cannot be forgotten in them.

``lupus-cds rules --links`` is the allow-list of card links an EHR such as Oracle Health needs: it must
contain every URL any card of any fixture patient carries, with and without a configured escalation link.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from cds_hooks import create_app
from cds_hooks.auth import load_clients
from plugin import fixtures
from plugin.hooks import cds_cli_commands

REGISTRATION = ROOT / "deploy" / "REGISTRATION.md"
DEPLOY_README = ROOT / "deploy" / "README.md"
INGRESS = ROOT / "deploy" / "k8s" / "ingress.yaml"
ESCALATION = "https://intranet.example.org/pathways/urgent-neurology"
URL_IN_TEXT = re.compile(r"https?://[^\s)>\]\"']+")


def fixture_app(**config):
    settings = {"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://", "LUPUS_CDS_LOG_FORMAT": "none",
                "LUPUS_CDS_METRICS": False, "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0} | config
    return create_app(settings, clock=lambda: fixtures.ANCHOR)


def card_urls_of_every_fixture(app) -> set[str]:
    """Every URL in any card of any fixture response: links, source url and icon, and URLs in the detail."""
    client = app.test_client()
    urls: set[str] = set()
    for name in fixtures.patient_names():
        for hook in fixtures.HOOKS:
            response = client.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}",
                                   data=fixtures.request_path(name, hook).read_bytes(),
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 200, (name, hook)
            for card in response.get_json()["cards"]:
                urls.update(link["url"] for link in card.get("links", []))
                urls.update(card["source"][field] for field in ("url", "icon") if field in card["source"])
                urls.update(URL_IN_TEXT.findall(card.get("detail", "")))
    return urls


def rules_links(env: dict[str, str] | None = None) -> list[str]:
    group = click.Group("lupus-cds")
    cds_cli_commands(cli=group)
    result = CliRunner().invoke(group, ["rules", "--links"], env=env or {})
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_rules_links_lists_every_url_a_fixture_card_carries(monkeypatch):
    monkeypatch.delenv("LUPUS_CDS_ESCALATION_URL", raising=False)
    listed = rules_links()
    assert listed == sorted(set(listed)), "one URL per line, sorted, no duplicates"
    assert all(urlsplit(url).scheme == "https" and urlsplit(url).netloc for url in listed)
    carried = card_urls_of_every_fixture(fixture_app())
    assert carried, "the fixtures' cards carry links"
    assert carried <= set(listed), f"not in `lupus-cds rules --links`: {sorted(carried - set(listed))}"


def test_rules_links_includes_the_configured_escalation_link():
    carried = card_urls_of_every_fixture(fixture_app(LUPUS_CDS_ESCALATION_URL=ESCALATION))
    assert ESCALATION in carried, "a red-flag fixture card carries the escalation link"
    listed = rules_links({"LUPUS_CDS_ESCALATION_URL": ESCALATION})
    assert carried <= set(listed)
    assert ESCALATION not in rules_links({"LUPUS_CDS_ESCALATION_URL": ""})


def test_rules_links_follows_the_card_module(monkeypatch):
    """Derived from plugin.cards: a link added there is listed without touching the command."""
    from plugin import cards

    monkeypatch.setitem(cards.LINKS, "new-guideline", cards.Link("New guideline", "https://guidelines.example/new"))
    assert "https://guidelines.example/new" in rules_links()


# --- deploy/REGISTRATION.md ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guide() -> str:
    return REGISTRATION.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def services() -> list[dict]:
    return fixture_app().test_client().get("/cds-services").get_json()["services"]


@pytest.mark.requirement("cds-hooks_2.0@213")
def test_registration_guide_names_every_service_its_hook_and_the_safety_minimum(guide, services):
    """What is negotiated with each EHR: every service and hook is listed, and the guide says which hook
    patient safety needs (the one that shows the red-flag card without an order being placed)."""
    for service in services:
        assert f"`{service['id']}` | `{service['hook']}`" in guide, service["id"]
    section = guide.split("### The hooks, and which are needed for safety", 1)[1].split("\n### ", 1)[0]
    assert "**`patient-view`**" in section and "red-flag" in section


def test_registration_guide_lists_the_scopes_of_every_prefetched_resource_type(guide, services):
    types = {template.split("?", 1)[0].split("/", 1)[0]
             for service in services for template in service["prefetch"].values()}
    assert types >= {"Patient", "Condition", "Observation"}
    for resource_type in types:
        for scope in (f"patient/{resource_type}.read", f"system/{resource_type}.rs"):
            assert scope in guide, f"{scope} missing from deploy/REGISTRATION.md"


def json_examples(text: str) -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def test_registration_guide_clients_files_are_valid(guide, tmp_path):
    examples = [example for example in json_examples(guide) if "clients" in example]
    assert len(examples) == 3  # Epic, Oracle Health, the Sandbox
    loaded = []
    for number, example in enumerate(examples):
        path = tmp_path / f"clients-{number}.json"
        path.write_text(json.dumps(example))
        loaded.extend(load_clients(path))
    by_iss = {client.iss: client for client in loaded}
    assert len(by_iss["https://cds-hooks.cerner.com"].key_urls) >= 2
    epic = next(client for iss, client in by_iss.items() if iss.endswith("/api/FHIR/R4"))
    assert epic.sub and "/api/epic/2019/Security/Open/PublicKeys/" in epic.jwks_url
    assert by_iss["https://sandbox.cds-hooks.org"].jwks_url == "https://sandbox.cds-hooks.org/.well-known/jwks.json"


def test_registration_guide_cites_the_vendor_pages(guide):
    for source in ("https://fhir.epic.com/Documentation?docId=cds-hooks", "https://fhir.cerner.com/millennium/cds_hooks/",
                   "https://authorization.cerner.com/jwk", "lupus-cds rules --links"):
        assert source in guide


# --- HTTPS in front of the service ---------------------------------------------------------------


def test_ingress_terminates_tls_for_the_public_host_and_routes_only_public_paths():
    ingress = yaml.safe_load(INGRESS.read_text())
    configmap = yaml.safe_load((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text())
    public = urlsplit(configmap["data"]["LUPUS_CDS_PUBLIC_URL"])
    assert public.scheme == "https"
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [public.hostname] and tls["secretName"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == public.hostname
    service = yaml.safe_load((ROOT / "deploy" / "k8s" / "service.yaml").read_text())
    paths = {}
    for path in rule["http"]["paths"]:
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}
        paths[path["path"]] = path["pathType"]
    assert paths == {"/cds-services": "Prefix", "/.well-known/jwks.json": "Exact"}, "no /metrics, no probes"


def test_deploy_readme_shows_tls_termination_in_front_of_the_container():
    text = DEPLOY_README.read_text(encoding="utf-8")
    section = text.split("## HTTPS (TLS termination)", 1)[1].split("\n## ", 1)[0]
    nginx = re.search(r"```nginx\n(.*?)```", section, re.S).group(1)
    for directive in ("listen 443 ssl", "ssl_certificate ", "ssl_certificate_key ", "proxy_pass http://127.0.0.1:8080",
                      "return 301 https://"):
        assert directive in nginx
    caddy = re.search(r"```caddyfile\n(.*?)```", section, re.S).group(1)
    assert "reverse_proxy /cds-services* 127.0.0.1:8080" in caddy
    assert "ingress.yaml" in section and "LUPUS_CDS_PUBLIC_URL" in section
