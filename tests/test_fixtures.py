"""The fixture patients of ``fixtures/`` (issue #5): every checked-in hook request gives its golden cards,
today and on any later day; every fixture resource is valid FHIR (``fhir.resources`` R4B models, the
closest to R4 that fhir.resources 8 ships); every card topic and the main silent cases are covered;
each patient has every hook; prefetch equals what the service's own templates find (PF-8).
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class

from plugin import fixtures
from plugin.demo import evaluate, make_app

ROOT = fixtures.fixtures_dir()
NAMES = fixtures.patient_names()
TOPICS = {"ck-testing", "ck-elevated", "electrolyte-testing", "electrolyte-abnormal", "steroid-review",
          "neuroactive-medication-review", "red-flag-urgent", "ncs-emg"}
SILENT = {"cutaneous-lupus-only", "lupus-anticoagulant-only", "sle-resolved-twitching",
          "sle-twitching-six-months-ago", "sle-twitching-labs-normal", "sle-paresthesia-recent-ncs"}
LARGE = "sle-synthea-large"
PAIRS = [(name, hook) for name in NAMES for hook in fixtures.HOOKS]


@pytest.fixture(scope="module")
def client():
    return make_app().test_client()


def later_app(days: int):
    """The service with its clock ``days`` after the anchor (same time of day)."""
    from cds_hooks import create_app

    instant = fixtures.ANCHOR + timedelta(days=days, hours=-5)
    return create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://",
                       "LUPUS_CDS_LOG_FORMAT": "none", "LUPUS_CDS_METRICS": False}, clock=lambda: instant), instant


# ------------------------------------------------------------------------------------------ the set


def test_at_least_fifteen_patients_each_with_an_index_entry():
    assert len(NAMES) >= 15
    index = fixtures.patient_index()
    assert sorted(index) == NAMES
    for name, info in index.items():
        assert info["title"] and info["shows"], name


@pytest.mark.parametrize("name", NAMES)
def test_each_patient_has_every_hook_request_and_golden_file(name):
    for hook in fixtures.HOOKS:
        assert fixtures.request_path(name, hook).is_file()
        assert fixtures.request_path(name, hook, prefetch=False).is_file()
        assert fixtures.expected_path(name, hook).is_file()
    extra = {p.name for p in (ROOT / "requests" / name).iterdir()} - {
        f"{hook}{suffix}.json" for hook in fixtures.HOOKS for suffix in ("", ".no-prefetch")}
    assert not extra, f"unexpected request files: {extra}"


def test_every_card_topic_and_the_silent_cases_are_covered():
    seen: dict[str, set[str]] = {}
    for name, hook in PAIRS:
        for card in fixtures.load_expected(name, hook):
            seen.setdefault(card["topic"], set()).add(name)
    assert set(seen) == TOPICS, f"missing: {TOPICS - set(seen)}"
    for name in SILENT:
        assert all(fixtures.load_expected(name, hook) == [] for hook in fixtures.HOOKS), name
    indicators = {c["indicator"] for n, h in PAIRS for c in fixtures.load_expected(n, h)}
    assert indicators == {"info", "warning", "critical"}


def test_medication_requests_and_statements_are_both_represented_with_product_codes():
    kinds: dict[str, int] = {}
    for name in NAMES:
        for resource in fixtures.bundle_resources(fixtures.load_bundle(name)):
            kind = resource["resourceType"]
            if kind in ("MedicationRequest", "MedicationStatement"):
                kinds[kind] = kinds.get(kind, 0) + 1
                coding = resource["medicationCodeableConcept"]["coding"][0]
                assert coding["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert kinds.get("MedicationRequest", 0) >= 5 and kinds.get("MedicationStatement", 0) >= 5, kinds


def test_the_large_patient_is_large_but_under_five_megabytes():
    path = ROOT / "patients" / f"{LARGE}.json"
    assert path.stat().st_size < 5 * 1024 * 1024
    assert len(fixtures.load_bundle(LARGE)["entry"]) > 1000


# ------------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize("name", NAMES)
def test_bundles_record_the_anchor_and_hold_no_data_on_or_after_it(name):
    bundle = fixtures.load_bundle(name)
    assert bundle["type"] == "transaction"
    assert bundle["timestamp"] == fixtures.ANCHOR_TEXT
    text = json.dumps(bundle["entry"])
    latest = max(re.findall(r'"(\d{4}-\d{2}-\d{2})(?:T[^"]*)?"', text))
    assert latest < fixtures.ANCHOR.date().isoformat(), f"{name}: data dated {latest}"


def test_shifting_moves_full_dates_only_and_keeps_times_and_offsets():
    value = {"a": "2026-11-20T09:30:00-05:00", "b": "2026-11-20", "c": "2026", "d": "2026-11",
             "e": "2157-6", "f": ["2026-02-28T00:00:00Z"], "g": "CK on 2026-11-20 (2.3x ULN)"}
    shifted = fixtures.shift_dates(value, 2)
    assert shifted == {**value, "a": "2026-11-22T09:30:00-05:00", "b": "2026-11-22", "f": ["2026-03-02T00:00:00Z"]}
    assert fixtures.shift_text(value["g"], 2) == "CK on 2026-11-22 (2.3x ULN)"
    assert fixtures.shift_days(fixtures.ANCHOR + timedelta(days=3, hours=11)) == 3


def test_loading_for_a_later_now_moves_every_date_by_whole_days():
    now = fixtures.ANCHOR + timedelta(days=100, hours=-11)
    stored, rendered = fixtures.load_bundle("sle-ck-elevated"), fixtures.load_bundle("sle-ck-elevated", now=now)
    assert rendered["timestamp"] == "2027-03-05T12:00:00Z"
    first = [r for r in fixtures.bundle_resources(stored) if r["resourceType"] == "Observation"][0]
    moved = [r for r in fixtures.bundle_resources(rendered) if r["id"] == first["id"]][0]
    stored_day = date.fromisoformat(first["effectiveDateTime"][:10])
    moved_day = (stored_day + timedelta(days=100)).isoformat()
    assert moved["effectiveDateTime"] == moved_day + first["effectiveDateTime"][10:]


# -------------------------------------------------------------------------------------- the cards


@pytest.mark.parametrize("name, hook", PAIRS)
def test_fixture_request_gives_its_golden_cards(client, name, hook):
    assert evaluate(client, name, hook) == fixtures.load_expected(name, hook), (
        f"{name}/{hook}: run `lupus-cds demo {name}` to see the difference")


@pytest.mark.parametrize("days", [1, 400])
def test_fixtures_never_age_requests_rendered_later_give_the_same_cards(days):
    app, instant = later_app(days)
    test_client = app.test_client()
    for name, hook in PAIRS:
        body = fixtures.load_request(name, hook, now=instant)
        response = test_client.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        got = fixtures.card_digest(response.get_json()["cards"])
        assert got == fixtures.load_expected(name, hook, now=instant), f"{name}/{hook} after {days} days"


# ---------------------------------------------------------------------------------------- validity


def _validate(resource, where):
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception as exc:  # the message names the field
        pytest.fail(f"{where}: {resource['resourceType']}/{resource.get('id')} is not valid FHIR: {exc}")


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_resource_validates(name):
    bundle = fixtures.load_bundle(name)
    for entry in bundle["entry"]:
        _validate(entry["resource"], name)
        assert entry["request"] == {"method": "PUT", "url": f"{entry['resource']['resourceType']}/"
                                                            f"{entry['resource']['id']}"}
    get_fhir_model_class("Bundle").model_validate({**bundle, "entry": []})
    for hook in fixtures.HOOKS:
        body = fixtures.load_request(name, hook)
        for key, value in body["prefetch"].items():
            if value is not None:
                _validate(value, f"{name}/{hook} prefetch.{key}")
        drafts = body["context"].get("draftOrders")
        if drafts is not None:
            _validate(drafts, f"{name}/{hook} draftOrders")


def test_ids_are_unique_across_all_patients():
    seen: dict[str, str] = {}
    for name in NAMES:
        for resource in fixtures.bundle_resources(fixtures.load_bundle(name)):
            key = f"{resource['resourceType']}/{resource['id']}"
            assert key not in seen, f"{key} in {name} and {seen.get(key)}"
            seen[key] = name


# ----------------------------------------------------------------------------------------- prefetch


@pytest.fixture(scope="module")
def templates(client):
    services = client.get("/cds-services").get_json()["services"]
    return {s["hook"]: s["prefetch"] for s in services if s["id"].startswith(fixtures.SERVICE_PREFIX)}


def without_self_links(prefetch):
    return {key: value if not (value and value.get("resourceType") == "Bundle") else
            {**value, "link": [link for link in value.get("link", []) if link["relation"] != "self"]}
            for key, value in prefetch.items()}


@pytest.mark.parametrize("name, hook", PAIRS)
def test_request_prefetch_is_what_the_templates_find_in_the_patient(templates, name, hook):
    body = fixtures.load_request(name, hook)
    resources = fixtures.bundle_resources(fixtures.load_bundle(name))
    expected = fixtures.evaluate_prefetch(templates[hook], body["context"], resources,
                                          base=fixtures.DEFAULT_FHIR_SERVER)
    # the self links spell out each template; what must match is what the search found
    assert without_self_links(body["prefetch"]) == without_self_links(expected), (
        "the prefetch templates now find other resources: rerun fixtures/build.py")
    no_prefetch = fixtures.load_request(name, hook, prefetch=False)
    assert "prefetch" not in no_prefetch and no_prefetch["fhirServer"] == fixtures.DEFAULT_FHIR_SERVER
    assert no_prefetch["context"] == body["context"]


def test_order_hooks_carry_draft_orders():
    body = fixtures.load_request("sle-twitching-no-labs", "order-sign")
    drafts = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    assert drafts[0]["resourceType"] == "MedicationRequest" and drafts[0]["status"] == "draft"
    select = fixtures.load_request("sle-twitching-no-labs", "order-select")
    assert select["context"]["selections"] == ["ServiceRequest/sle-twitching-no-labs-draft-ck"]
    topics = {c["topic"] for c in fixtures.load_expected("sle-twitching-no-labs", "order-select")}
    assert "ck-testing" not in topics  # the CK draft suppresses the CK suggestion


# ------------------------------------------------------------------------------- search evaluator

OBS = [
    {"resourceType": "Observation", "id": f"o{i}", "status": status, "subject": {"reference": "Patient/p"},
     "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "effectiveDateTime": when}
    for i, (code, status, when) in enumerate([("1-1", "final", "2026-01-02"), ("2-2", "final", "2026-03-01T10:00:00Z"),
                                              ("1-1", "preliminary", "2026-02-01"), ("3-3", "final", "2026-04-01")])
] + [{"resourceType": "Observation", "id": "other", "status": "final", "subject": {"reference": "Patient/q"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "1-1"}]}, "effectiveDateTime": "2026-05-01"}]


def test_search_evaluator_answers_the_template_subset():
    found = fixtures.search(OBS, "Observation?patient=p&code=http://loinc.org|1-1,http://loinc.org|2-2&_sort=-date")
    assert [e["resource"]["id"] for e in found["entry"]] == ["o1", "o2", "o0"]
    assert found["total"] == 3 and [link["relation"] for link in found["link"]] == ["self"]
    paged = fixtures.search(OBS, "Observation?patient=Patient/p&status=final&_sort=date&_count=2")
    assert [e["resource"]["id"] for e in paged["entry"]] == ["o0", "o1"]
    assert paged["total"] == 3 and paged["link"][-1]["relation"] == "next"
    assert fixtures.search(OBS, "Observation/o3")["id"] == "o3"
    assert fixtures.search(OBS, "Observation/nope") is None
    assert fixtures.search(OBS, "Observation?patient=p&code=1-1")["total"] == 2


@pytest.mark.parametrize("query", ["Observation?patient=p&date=ge2026-01-01", "Observation?patient=p&_sort=-status",
                                   "Condition?patient=p&_sort=-date"])
def test_search_evaluator_refuses_what_it_does_not_implement(query):
    with pytest.raises(fixtures.UnsupportedSearch):
        fixtures.search(OBS, query)


def test_stored_requests_are_usable_directly_with_evaluate_now(tmp_path):
    """The README's promise: ``lupus-cds evaluate --now <anchor> FILE`` gives the golden cards."""
    from click.testing import CliRunner

    from cds_hooks.cli import cli

    path = fixtures.request_path("sle-nephritis-everything", "patient-view")
    result = CliRunner().invoke(cli, ["evaluate", "--now", fixtures.ANCHOR_TEXT, "--json", str(path)])
    assert result.exit_code == 0, result.output
    cards = json.loads(result.output[result.output.index("{"):])["cards"]
    assert fixtures.card_digest(cards) == fixtures.load_expected("sle-nephritis-everything", "patient-view")


def test_demo_exits_non_zero_on_a_changed_golden_file_and_update_rewrites_it(tmp_path, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from plugin.demo import demo_command

    copy = tmp_path / "fixtures"
    for part in ("patients", "expected", "requests"):
        shutil.copytree(ROOT / part, copy / part)
    monkeypatch.setenv("LUPUS_CDS_FIXTURES_DIR", str(copy))
    golden = copy / "expected" / "sle-ck-elevated" / "patient-view.json"
    original = golden.read_text()
    golden.write_text(original.replace("warning", "info"))

    failed = CliRunner().invoke(demo_command, ["sle-ck-elevated"])
    assert failed.exit_code == 1 and "DIFFERS" in failed.output and "ck-elevated" in failed.output
    updated = CliRunner().invoke(demo_command, ["--update", "sle-ck-elevated"])
    assert updated.exit_code == 0 and json.loads(golden.read_text()) == json.loads(original)
    passed = CliRunner().invoke(demo_command, [])
    assert passed.exit_code == 0 and f"All {len(NAMES) * 3} requests give their golden cards" in passed.output
