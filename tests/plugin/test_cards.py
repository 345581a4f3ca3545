"""The card validator every card of the clinical suite passes through (builders.run calls it), its own
tests, and checks of the card wording and assembly in plugin/cards.py."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

# the clinical suite needs the terminology and medication modules of the plugin (built separately)
import builders as b  # noqa: E402
import pytest

from plugin import cards as card_text
from plugin.rules import Finding

INDICATORS = {"info", "warning", "critical"}
TOPIC_SYSTEM = "https://lupus-cds.example.org/fhir/CodeSystem/card-topic"
TOPIC_CODES = {
    "ck-testing",
    "ck-elevated",
    "electrolyte-testing",
    "electrolyte-abnormal",
    "steroid-review",
    "neuroactive-medication-review",
    "red-flag-urgent",
    "ncs-emg",
}


def empty_members(value: Any, path: str = "card") -> list[str]:
    """Every null, "", [] or {} anywhere in ``value`` (CDS Hooks GEN-2..4)."""
    problems = []
    if value is None or value == "" or value == [] or value == {}:
        return [f"{path} is null or empty"]
    if isinstance(value, Mapping):
        for key, item in value.items():
            problems.extend(empty_members(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems.extend(empty_members(item, f"{path}[{index}]"))
    return problems


def card_problems(card: Mapping[str, Any]) -> list[str]:
    """What is wrong with one card, by CDS Hooks 2.0.1 and this project's card rules."""
    problems = empty_members(card)
    summary = card.get("summary")
    if not isinstance(summary, str) or not 0 < len(summary) < 140:
        problems.append(f"summary must be 1-139 characters: {summary!r}")
    if card.get("indicator") not in INDICATORS:
        problems.append(f"indicator {card.get('indicator')!r}")
    try:
        uuid.UUID(str(card.get("uuid")))
    except ValueError:
        problems.append("uuid must be a UUID")
    if not isinstance(card.get("detail"), str):
        problems.append("detail must be Markdown text")
    source = card.get("source") or {}
    if not isinstance(source.get("label"), str):
        problems.append("source.label is required")
    topic = source.get("topic") or {}
    if topic.get("system") != TOPIC_SYSTEM or topic.get("code") not in TOPIC_CODES:
        problems.append(f"source.topic {topic!r}")
    if "suggestions" in card:
        if card.get("selectionBehavior") != "any":
            problems.append("selectionBehavior 'any' is required with suggestions")
        for suggestion in card["suggestions"]:
            if not isinstance(suggestion.get("label"), str) or not isinstance(suggestion.get("uuid"), str):
                problems.append("suggestion needs label and uuid")
            for action in suggestion.get("actions", []):
                if action.get("type") != "create":
                    problems.append(f"only create actions, got {action.get('type')!r}")
                if not isinstance(action.get("description"), str):
                    problems.append("action.description is required")
                resource = action.get("resource")
                if not isinstance(resource, Mapping):
                    problems.append("create needs a resource")
                    continue
                if resource.get("resourceType") != "ServiceRequest":
                    problems.append("suggestions may only create ServiceRequests (never change a medication)")
                if resource.get("status") != "draft" or resource.get("intent") != "order":
                    problems.append("draft orders must be status draft, intent order")
                if resource.get("subject") != {"reference": f"Patient/{b.PATIENT_ID}"}:
                    problems.append("draft order subject must be the patient")
    elif "selectionBehavior" in card:
        problems.append("selectionBehavior without suggestions")
    for reason in card.get("overrideReasons", []):
        if not all(isinstance(reason.get(f), str) for f in ("system", "code", "display")):
            problems.append(f"overrideReason needs system, code, display: {reason!r}")
    for link in card.get("links", []):
        if link.get("type") != "absolute" or not str(link.get("url", "")).startswith("https://"):
            problems.append(f"link {link!r}")
        if not isinstance(link.get("label"), str):
            problems.append("link.label is required")
    return problems


# ------------------------------------------------------------------------------------ the validator


def test_validator_accepts_a_real_card():
    cards = b.run(b.baseline())
    assert cards and all(card_problems(c) == [] for c in cards)


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (lambda c: c.update(summary="x" * 140), "summary"),
        (lambda c: c.update(indicator="success"), "indicator"),
        (lambda c: c.update(links=[]), "links is null or empty"),
        (lambda c: c.update(detail=None), "detail is null"),
        (lambda c: c.pop("selectionBehavior"), "selectionBehavior"),
        (lambda c: c["overrideReasons"].append({"system": "s", "code": "c"}), "overrideReason"),
        (lambda c: c["suggestions"][0]["actions"][0].update(type="update"), "only create"),
        (lambda c: c["source"]["topic"].update(code="other"), "source.topic"),
    ],
)
def test_validator_catches(mutation, expected):
    import copy

    card = copy.deepcopy(b.card(b.run(b.baseline()), "ck-testing"))
    mutation(card)
    assert any(expected in p for p in card_problems(card))


# ------------------------------------------------------------------------------------- the wording


def test_every_template_variant_has_why_text():
    assert set(card_text.TEMPLATES) == set(card_text.WHY)


def test_every_topic_has_source_override_reasons_and_display():
    for topic in TOPIC_CODES:
        assert topic in card_text.SOURCES and topic in card_text.TOPIC_OVERRIDES and topic in card_text.TOPICS


@pytest.mark.requirement("cds-hooks_2.0@83")
def test_short_fallback_summaries_fit_with_wide_values():
    wide = {
        "days": 365,
        "pulse_days": 365,
        "target": "7.5",
        "ck_value": "123,456",
        "ck_date": "2025-12-31",
        "ratio": "643",
        "k_value": "2.49",
        "k_date": "2025-12-31",
        "mg_value": "1.69",
        "mg_mmol": "0.69",
        "on_drug": "",
        "on_ppi": "",
        "review_ppi": "",
        "others": "calcium, phosphate, sodium",
        "total": "1,250",
        "drugs": "methylprednisolone",
        "drug": "Methylprednisolone",
        "pulse_mg": "1,000",
        "pulse_pred": "1,250",
        "pulse_dates": "2025-12-01 to 2025-12-31",
        "dose_short": "Prednisone-equivalent 1,250 mg/day",
        "taper_advice": "Continue the taper if feasible",
        "flag_words": "new weakness, loss of sensation and trouble swallowing",
        "sensory_words": "Numbness/tingling",
        "ck_grade": "flagged high by the lab",
        "ck_reported": "123,456 (no unit)",
        "myotoxic": "hydroxychloroquine and atorvastatin",
        "on_k_drug": " on sulfamethoxazole / trimethoprim",
        "and_mg": " K+ and order Mg",
        "unreadable": "Ionized calcium 123.45",
        "unreadable_date": "2025-12-31",
        "ca_value": "10.25",
        "ca_unit": "mg/dL",
        "ca_corrected": " (corrected)",
        "per_kg": " (12.34 mg/kg/day)",
    }
    for variant, _full, short in card_text.all_summary_templates():
        assert len(short.format(**wide)) < 140, variant


@pytest.mark.requirement("cds-hooks_2.0@83")
def test_summary_falls_back_when_too_long(monkeypatch):
    monkeypatch.setitem(card_text.TEMPLATES, "ck-order", ("x" * 150 + "{days}", "Order CK ({days} days)"))
    from plugin.settings import Settings

    finding = Finding("ck", "ck-testing", "info", "ck-order")
    assert card_text.render_summary(finding, Settings.from_config({})) == "Order CK (30 days)"


@pytest.mark.parametrize(
    "value, text",
    [
        (1540, "1,540"),
        (3.1, "3.1"),
        (0.5346, "0.53"),
        (12400.0, "12,400"),
        (7.5, "7.5"),
        (40.0, "40"),
        (None, "?"),
    ],
)
def test_number_format(value, text):
    assert card_text.num(value) == text


@pytest.mark.requirement("cds-hooks_2.0@80")
def test_uuid_is_stable_per_patient_rule_and_day():
    first = {c["source"]["topic"]["code"]: c["uuid"] for c in b.run(b.baseline())}
    again = {c["source"]["topic"]["code"]: c["uuid"] for c in b.run(b.baseline())}
    assert first == again
    assert len(set(first.values())) == len(first)
    later = {
        c["source"]["topic"]["code"]: c["uuid"]
        for c in b.run(b.baseline(), now=b.NOW.replace(day=b.NOW.day + 1))
    }
    assert later["ck-testing"] != first["ck-testing"]


def test_suggestion_uuids_are_stable_and_distinct():
    cards = b.run(b.baseline())
    ids = [s["uuid"] for c in cards for s in c.get("suggestions", [])]
    assert len(ids) == len(set(ids)) == 3
    assert ids == [s["uuid"] for c in b.run(b.baseline()) for s in c.get("suggestions", [])]


def test_one_request_per_test_with_loinc_code():
    electrolytes = b.card(b.run(b.baseline()), "electrolyte-testing")
    assert len(electrolytes["suggestions"]) == 2
    for suggestion in electrolytes["suggestions"]:
        (action,) = suggestion["actions"]
        (coding,) = action["resource"]["code"]["coding"]
        assert coding["system"] == "http://loinc.org"


def test_detail_lists_prefetch_gaps():
    cards = b.run(b.baseline(), missing=["ck"])
    assert "ck: not prefetched" in b.card(cards, "ck-testing")["detail"]


@pytest.mark.requirement("cds-hooks_2.0@130")
def test_draft_orders_validate_as_fhir_r4():
    from fhir.resources.R4B.servicerequest import ServiceRequest

    cards = b.run(b.baseline(b.ck(12400)))
    for c in cards:
        for suggestion in c.get("suggestions", []):
            ServiceRequest.model_validate(suggestion["actions"][0]["resource"])


def test_every_card_the_suite_produced_is_valid():
    """Runs last in this module; builders.run already checks each card as it is made."""
    for produced in b.PRODUCED:
        assert card_problems(produced) == []
