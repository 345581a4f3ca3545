"""Discovery endpoint (checklist section 2; GEN-2..4)."""

from __future__ import annotations

import pytest

from cds_hooks.cards import prune


@pytest.mark.requirement("cds-hooks_2.0@1", "cds-hooks_2.0@4", "cds-hooks_2.0@5", "cds-hooks_2.0@6", "cds-hooks_2.0@7",
                         "cds-hooks_2.0@9", "cds-hooks_2.0@10", "cds-hooks_2.0@13", "cds-hooks_2.0@211")
def test_disc_1_2_4_discovery_lists_registered_services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200  # DISC-7
    assert response.mimetype == "application/json"
    services = response.get_json()["services"]  # DISC-2
    assert {(s["id"], s["hook"]) for s in services} == {("patient-greeter", "patient-view"),
                                                         ("patient-greeter", "order-sign")}
    for service in services:  # DISC-4
        for field in ("hook", "description", "id"):
            assert isinstance(service[field], str) and service[field]


@pytest.mark.requirement("cds-hooks_2.0@8", "cds-hooks_2.0@11", "cds-hooks_2.0@29", "cds-hooks_2.0@36")
def test_disc_5_6_title_and_prefetch_are_declared(client):
    services = {s["hook"]: s for s in client.get("/cds-services").get_json()["services"]}
    greeter = services["patient-view"]
    assert greeter["title"] == "Patient greeting"
    assert greeter["prefetch"]["patientToGreet"] == "Patient/{{context.patientId}}"


@pytest.mark.requirement("cds-hooks_2.0@3")
def test_gen_2_4_no_null_or_empty_members(client):
    body = client.get("/cds-services").get_json()
    assert prune(body) == body
    sign = next(s for s in body["services"] if s["hook"] == "order-sign")
    assert "prefetch" not in sign and "title" not in sign  # omitted, not {} or null (GEN-4)


@pytest.mark.requirement("cds-hooks_2.0@6")
def test_disc_3_no_services_gives_empty_array(make_app):
    response = make_app(plugins=()).test_client().get("/cds-services")
    assert response.status_code == 200
    assert response.get_json() == {"services": []}


def test_discovery_answers_with_a_trailing_slash_too(client):
    """``GET /cds-services/`` is the same document, not a 404."""
    plain, slashed = client.get("/cds-services"), client.get("/cds-services/")
    assert slashed.status_code == 200
    assert slashed.get_json() == plain.get_json() and slashed.get_json()["services"]
