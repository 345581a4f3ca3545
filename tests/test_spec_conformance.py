"""The CDS Hooks 2.0 rules on what a service sends, checked on what lupus-cds really sends: its discovery
document, its prefetch templates, and the response to every checked-in fixture request (every fixture
patient, every hook: all card topics, all three indicators, silent patients, suggestions, links).

Each test names the requirements it verifies (``@pytest.mark.requirement``, docs/conformance.md). The
generic card checks of the protocol layer (``cds_hooks.cards``) and the clinical card validator
(``tests/plugin/test_cards.py``) run on cards the tests build; these run on the HTTP responses.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class
from markdown_it import MarkdownIt

from cds_hooks.hooks import USER_TOKENS, hook_definition
from plugin import cards as card_text
from plugin import fixtures
from plugin.demo import make_app

SERVICE_URL = "/cds-services/{prefix}-{hook}"
PAIRS = [(name, hook) for name in fixtures.patient_names() for hook in fixtures.HOOKS]


def service_url(hook: str) -> str:
    return SERVICE_URL.format(prefix=fixtures.SERVICE_PREFIX, hook=hook)


@pytest.fixture(scope="module")
def client():
    return make_app().test_client()


@pytest.fixture(scope="module")
def responses(client) -> dict[tuple[str, str], Any]:
    """(patient, hook) -> the HTTP response to the checked-in request with full prefetch."""
    out = {}
    for name, hook in PAIRS:
        body = fixtures.request_path(name, hook).read_bytes()
        out[(name, hook)] = client.post(service_url(hook), data=body, headers={"Content-Type": "application/json"})
    return out


@pytest.fixture(scope="module")
def cards(responses) -> list[tuple[str, dict[str, Any]]]:
    """(where, card) for every card of every fixture response."""
    out = []
    for (name, hook), response in responses.items():
        for index, card in enumerate(response.get_json()["cards"]):
            out.append((f"{name}/{hook}/cards[{index}]", card))
    assert len(out) > 60, "the fixtures should produce many cards"
    return out


def suggestions_of(cards) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for where, card in cards:
        for index, suggestion in enumerate(card.get("suggestions", [])):
            yield f"{where}.suggestions[{index}]", card, suggestion


def is_absolute_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("https", "http") and bool(parts.netloc)


# ------------------------------------------------------------------------------------------ discovery


@pytest.fixture(scope="module")
def discovery(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    return response


@pytest.mark.requirement("cds-hooks_2.0@1", "cds-hooks_2.0@4", "cds-hooks_2.0@5", "cds-hooks_2.0@6",
                         "cds-hooks_2.0@13")
def test_discovery_answers_get_with_200_and_a_json_services_array(discovery):
    assert discovery.mimetype == "application/json"
    body = json.loads(discovery.get_data())
    assert set(body) == {"services"} and isinstance(body["services"], list)
    assert {s["hook"] for s in body["services"]} == set(fixtures.HOOKS)


@pytest.mark.requirement("cds-hooks_2.0@7", "cds-hooks_2.0@8", "cds-hooks_2.0@9", "cds-hooks_2.0@10",
                         "cds-hooks_2.0@12")
def test_every_service_has_hook_title_description_id_and_usage_requirements_strings(discovery):
    for service in discovery.get_json()["services"]:
        for field in ("hook", "title", "description", "id", "usageRequirements"):
            assert isinstance(service[field], str) and service[field].strip(), (service.get("id"), field)
        assert hook_definition(service["hook"]) is not None, f"{service['hook']} is not a CDS Hooks hook"
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", service["id"]), "the id is one URL path segment"


@pytest.mark.requirement("cds-hooks_2.0@10", "cds-hooks_2.0@16")
def test_every_discovered_id_is_answered_at_base_cds_services_id(discovery, client):
    for service in discovery.get_json()["services"]:
        name = "sle-twitching-no-labs"
        body = fixtures.request_path(name, service["hook"]).read_bytes()
        response = client.post(f"/cds-services/{service['id']}", data=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 200, service["id"]
        assert response.get_json()["cards"], service["id"]


@pytest.mark.requirement("cds-hooks_2.0@11", "cds-hooks_2.0@29", "cds-hooks_2.0@36")
def test_prefetch_templates_are_declared_in_discovery_under_keys_the_requests_use(discovery):
    for service in discovery.get_json()["services"]:
        prefetch = service["prefetch"]
        assert isinstance(prefetch, dict) and prefetch
        assert all(isinstance(key, str) and isinstance(template, str) for key, template in prefetch.items())
        # the fixture requests prefetch exactly these keys, so the keys identify the data in the request
        request = json.loads(fixtures.request_path("sle-ck-elevated", service["hook"]).read_text())
        assert set(request["prefetch"]) == set(prefetch), service["id"]


def _templates(discovery) -> list[tuple[str, str, str]]:
    return [(service["hook"], key, template) for service in discovery.get_json()["services"]
            for key, template in service["prefetch"].items()]


TOKEN = re.compile(r"\{\{([^{}]*)\}\}")


@pytest.mark.requirement("cds-hooks_2.0@35", "cds-hooks_2.0@55", "cds-hooks_2.0@56", "cds-hooks_2.0@57",
                         "cds-hooks_2.0@59")
def test_prefetch_tokens_are_delimited_and_name_root_context_fields_or_user_ids(discovery):
    used = set()
    for hook, key, template in _templates(discovery):
        outside = TOKEN.sub("", template)
        assert "{" not in outside and "}" not in outside, f"{key}: a token not delimited by {{{{ }}}}"
        definition = hook_definition(hook)
        for token in TOKEN.findall(template):
            used.add(token)
            if token in USER_TOKENS:
                continue
            assert re.fullmatch(r"context\.[A-Za-z][A-Za-z0-9]*", token), f"{key}: {token}"
            field = token.split(".", 1)[1]
            # root-level, primitive, marked as a prefetch token by the hook (not draftOrders/selections)
            assert field in definition.token_fields, f"{key}: {token} is not a prefetch token of {hook}"
    assert used == {"context.patientId"}


#: search parameters the templates use, by kind (CDS Hooks 2.0 "Prefetch query restrictions")
REFERENCE_PARAMETERS = {"patient", "subject", "encounter"}
TOKEN_PARAMETERS = {"code", "status", "category", "clinical-status", "intent"}
DATE_PARAMETERS = {"date", "authoredon", "onset-date", "recorded-date", "effective"}


@pytest.mark.requirement("cds-hooks_2.0@58")
def test_prefetch_queries_keep_to_the_recommended_subset(discovery):
    """Instance reads; type searches with reference, token (equality, ``:in`` only), date (eq/lt/gt/ge/le),
    ``_count`` and ``_sort`` parameters; nothing else (no _include, chaining, _has or other modifiers)."""
    for _hook, key, template in _templates(discovery):
        path, _, query = template.partition("?")
        if not query:
            assert re.fullmatch(r"[A-Z][A-Za-z]+/\{\{[^{}]+\}\}", path), f"{key}: an instance read"
            continue
        assert re.fullmatch(r"[A-Z][A-Za-z]+", path), f"{key}: a type-level search"
        for parameter in query.split("&"):
            name, _, value = parameter.partition("=")
            base, _, modifier = name.partition(":")
            assert value, f"{key}: {name} has no value"
            if base in REFERENCE_PARAMETERS:
                assert not modifier and re.fullmatch(r"(\w+/)?\{\{[^{}]+\}\}", value), f"{key}: {parameter}"
            elif base in TOKEN_PARAMETERS:
                assert modifier in ("", "in"), f"{key}: {name}: only :in may modify a token parameter"
                for item in value.split(","):
                    assert re.fullmatch(r"([^|,]+\|)?[^|,]+", item), f"{key}: {name}={item}"
            elif base in DATE_PARAMETERS:
                assert not modifier and re.fullmatch(r"(eq|lt|gt|ge|le)\d{4}(-\d{2}(-\d{2})?)?.*", value), key
            elif base == "_count":
                assert value.isdigit(), f"{key}: _count={value}"
            elif base == "_sort":
                assert re.fullmatch(r"-?[a-z-]+", value), f"{key}: _sort={value}"
            else:
                pytest.fail(f"{key}: {name} is outside the recommended prefetch subset")


# ------------------------------------------------------------------------------------------- responses


@pytest.mark.requirement("cds-hooks_2.0@1", "cds-hooks_2.0@16", "cds-hooks_2.0@28", "cds-hooks_2.0@74")
def test_every_fixture_request_gets_200_with_a_json_cards_array(responses):
    for (name, hook), response in responses.items():
        assert response.status_code == 200, (name, hook)
        assert response.mimetype == "application/json", (name, hook)
        body = json.loads(response.get_data())
        assert isinstance(body, dict) and isinstance(body["cards"], list), (name, hook)
        assert set(body) == {"cards"}, "no systemActions: the service sends none"


def _empty_members(value: Any, path: str) -> Iterator[str]:
    if value is None or (isinstance(value, (str, list, dict)) and not value):
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _empty_members(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _empty_members(item, f"{path}[{index}]")


@pytest.mark.requirement("cds-hooks_2.0@3")
def test_no_element_is_null_or_empty_except_an_empty_cards_array(responses, discovery):
    for (name, hook), response in responses.items():
        body = response.get_json()
        if body["cards"] == []:
            continue  # the one empty element the spec allows: no guidance
        assert list(_empty_members(body, f"{name}/{hook}")) == []
    assert list(_empty_members(discovery.get_json(), "discovery")) == []


@pytest.mark.requirement("cds-hooks_2.0@77")
def test_a_patient_with_nothing_to_say_gets_200_and_exactly_an_empty_cards_array(responses):
    silent = [(name, hook) for (name, hook), response in responses.items() if response.get_json()["cards"] == []]
    assert {name for name, _ in silent} >= {"cutaneous-lupus-only", "sle-resolved-twitching",
                                             "sle-twitching-labs-normal"}
    for key in silent:
        assert responses[key].status_code == 200
        assert json.loads(responses[key].get_data()) == {"cards": []}


@pytest.mark.requirement("cds-hooks_2.0@80", "cds-hooks_2.0@81")
def test_card_uuids_are_uuid_strings_unique_across_all_responses(cards):
    seen: dict[str, str] = {}
    for where, card in cards:
        value = card["uuid"]
        assert isinstance(value, str) and str(uuid.UUID(value)) == value, where
        # one card per patient, rule and day: a uuid names exactly one card (the same card in the three
        # hooks of one patient keeps its uuid so feedback on it is counted once)
        patient = where.split("/", 1)[0]
        topic = card["source"]["topic"]["code"]
        assert seen.setdefault(value, f"{patient}:{topic}") == f"{patient}:{topic}", where


@pytest.mark.requirement("cds-hooks_2.0@83")
def test_summary_is_a_string_of_fewer_than_140_characters(cards):
    for where, card in cards:
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140, where


GFM = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _inline_texts(tokens) -> Iterator[str]:
    for token in tokens:
        if token.type == "text":
            yield token.content
        if token.children:
            yield from _inline_texts(token.children)


def _types(tokens) -> Iterator[str]:
    for token in tokens:
        yield token.type
        if token.children:
            yield from _types(token.children)


@pytest.mark.requirement("cds-hooks_2.0@84", "cds-hooks_2.0@85")
def test_detail_is_github_flavored_markdown_that_renders_as_written(cards):
    """Parsed as GFM: no raw HTML (clients render or strip it differently), every "- " line is a list
    item, and every ``**`` opens or closes bold text (none is shown literally)."""
    for where, card in cards:
        detail = card["detail"]
        assert isinstance(detail, str), where
        tokens = GFM.parse(detail)
        types = list(_types(tokens))
        assert not {"html_block", "html_inline"} & set(types), f"{where}: raw HTML in the detail"
        bullet_lines = [line for line in detail.splitlines() if re.match(r"\s*- ", line)]
        assert types.count("list_item_open") == len(bullet_lines), where
        assert "strong_open" in types, f"{where}: the detail's headings are bold"
        assert not any("**" in text for text in _inline_texts(tokens)), f"{where}: unpaired **"


@pytest.mark.requirement("cds-hooks_2.0@87", "cds-hooks_2.0@88")
def test_indicator_is_info_warning_or_critical_and_all_three_occur(cards):
    indicators = [card["indicator"] for _, card in cards]
    assert set(indicators) == {"info", "warning", "critical"}


@pytest.mark.requirement("cds-hooks_2.0@90", "cds-hooks_2.0@105", "cds-hooks_2.0@106", "cds-hooks_2.0@107",
                         "cds-hooks_2.0@108", "cds-hooks_2.0@115", "cds-hooks_2.0@116", "cds-hooks_2.0@216",
                         "cds-hooks_2.0@217", "cds-hooks_2.0@218", "cds-hooks_2.0@220")
def test_source_has_a_label_an_absolute_url_and_a_topic_coding(cards):
    for where, card in cards:
        source = card["source"]
        assert isinstance(source, dict) and set(source) <= {"label", "url", "icon", "topic"}, where
        assert isinstance(source["label"], str) and source["label"].strip(), where
        assert is_absolute_url(source["url"]), where
        assert "icon" not in source, "no icon is sent (docs/conformance-exclusions.csv)"
        topic = source["topic"]
        assert isinstance(topic["system"], str) and isinstance(topic["code"], str), where
        assert isinstance(topic.get("display", ""), str), where


@pytest.mark.requirement("cds-hooks_2.0@109")
def test_source_url_is_the_static_evidence_page_not_a_drill_down(cards):
    static = {url for _, url, _ in card_text.SOURCES.values()}
    for where, card in cards:
        assert card["source"]["url"] in static, where
    patient_ids = {json.loads(fixtures.request_path(n, "patient-view").read_text())["context"]["patientId"]
                   for n in fixtures.patient_names()}
    assert not any(pid in card["source"]["url"] for _, card in cards for pid in patient_ids)


@pytest.mark.requirement("cds-hooks_2.0@92", "cds-hooks_2.0@94", "cds-hooks_2.0@117", "cds-hooks_2.0@118",
                         "cds-hooks_2.0@119", "cds-hooks_2.0@120", "cds-hooks_2.0@121", "cds-hooks_2.0@123",
                         "cds-hooks_2.0@124")
def test_suggestions_are_objects_with_label_uuid_boolean_isrecommended_and_an_actions_array(cards):
    with_suggestions = [card for _, card in cards if "suggestions" in card]
    assert with_suggestions and len(with_suggestions) < len(cards), "suggestions are optional: some cards have none"
    for where, card, suggestion in suggestions_of(cards):
        assert isinstance(card["suggestions"], list)
        assert isinstance(suggestion["label"], str) and suggestion["label"].strip(), where
        assert isinstance(suggestion["uuid"], str) and uuid.UUID(suggestion["uuid"]), where
        assert isinstance(suggestion["isRecommended"], bool), where
        assert isinstance(suggestion["actions"], list) and suggestion["actions"], where


@pytest.mark.requirement("cds-hooks_2.0@93", "cds-hooks_2.0@95", "cds-hooks_2.0@96")
def test_selection_behavior_is_a_valid_string_exactly_when_there_are_suggestions(cards):
    for where, card in cards:
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("at-most-one", "any"), where
        else:
            assert "selectionBehavior" not in card, where


@pytest.mark.requirement("cds-hooks_2.0@122")
def test_several_recommended_suggestions_only_on_any_cards(cards):
    several = [card for _, card in cards if sum(s["isRecommended"] for s in card.get("suggestions", [])) > 1]
    assert several, "a card recommends several orders (electrolytes: potassium and magnesium)"
    assert all(card["selectionBehavior"] == "any" for card in several)


@pytest.mark.requirement("cds-hooks_2.0@125", "cds-hooks_2.0@127", "cds-hooks_2.0@128", "cds-hooks_2.0@129",
                         "cds-hooks_2.0@130", "cds-hooks_2.0@131")
def test_each_suggestion_creates_exactly_the_new_draft_order_its_label_names(cards):
    """One action per suggestion, so accepting a suggestion (all of its actions) does exactly what its
    label says; the action creates a new FHIR R4 ServiceRequest (no id: the EHR assigns it)."""
    by_label = {orderable.label: orderable for orderable in card_text.ORDERABLES.values()}
    for where, _card, suggestion in suggestions_of(cards):
        (action,) = suggestion["actions"]
        assert action["type"] in ("create", "update", "delete") and action["type"] == "create", where
        assert isinstance(action["description"], str) and action["description"].strip(), where
        resource = action["resource"]
        assert "id" not in resource and resource["status"] == "draft", where
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        orderable = by_label[suggestion["label"]]
        assert action["description"] == orderable.description, where
        assert resource["code"]["text"] == orderable.display, where


@pytest.mark.requirement("cds-hooks_2.0@98", "cds-hooks_2.0@99", "cds-hooks_2.0@100", "cds-hooks_2.0@136",
                         "cds-hooks_2.0@216", "cds-hooks_2.0@217", "cds-hooks_2.0@218", "cds-hooks_2.0@219")
def test_override_reasons_are_codings_with_system_code_and_display(cards):
    for where, card in cards:
        reasons = card["overrideReasons"]
        assert isinstance(reasons, list) and reasons, where
        for reason in reasons:
            assert set(reason) == {"system", "code", "display"}, where
            assert all(isinstance(reason[f], str) and reason[f].strip() for f in reason), where


@pytest.mark.requirement("cds-hooks_2.0@103", "cds-hooks_2.0@104", "cds-hooks_2.0@138", "cds-hooks_2.0@139",
                         "cds-hooks_2.0@141", "cds-hooks_2.0@142", "cds-hooks_2.0@146", "cds-hooks_2.0@147")
def test_links_have_label_absolute_url_and_type_and_no_app_context(cards):
    for where, card in cards:
        links = card["links"]
        assert isinstance(links, list) and links, where
        for link in links:
            assert isinstance(link["label"], str) and link["label"].strip(), where
            assert is_absolute_url(link["url"]), where
            assert link["type"] in ("absolute", "smart"), where
            # appContext only on smart links; the service sends only absolute links, so never
            assert link["type"] == "absolute" and "appContext" not in link, where


@pytest.mark.requirement("cds-hooks_2.0@210")
def test_a_later_hook_gets_a_new_set_of_cards_reflecting_what_is_being_ordered(responses):
    """sle-twitching-no-labs: chart opened, CK suggested; CK in the draft orders at order-select, so the
    new set of cards no longer suggests it."""
    topics = {hook: [c["source"]["topic"]["code"] for c in responses[("sle-twitching-no-labs", hook)].get_json()
                     ["cards"]] for hook in fixtures.HOOKS}
    assert "ck-testing" in topics["patient-view"]
    assert "ck-testing" not in topics["order-select"]


@pytest.mark.requirement("cds-hooks_2.0@54")
@pytest.mark.parametrize("name", ["sle-twitching-no-labs", "cutaneous-lupus-only"])
def test_no_prefetch_and_a_fhir_server_the_service_may_not_call_gives_412(client, name):
    """The no-prefetch fixture requests name a FHIR server but carry no token, and the service is not
    allowed to call it: the required data cannot be had."""
    for hook in fixtures.HOOKS:
        body = fixtures.request_path(name, hook, prefetch=False).read_bytes()
        assert b'"prefetch"' not in body
        response = client.post(service_url(hook), data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 412, (name, hook)
        outcome = response.get_json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == ["prefetch.conditions", "prefetch.patient"]


@pytest.mark.requirement("cds-hooks_2.0@27")
def test_the_largest_fixture_patient_is_answered_well_within_500_ms(client):
    """The service's own share of the 500 ms: median of five in-process calls with full prefetch for the
    largest fixture (a Synthea record of about 240 kB) for each hook."""
    for hook in fixtures.HOOKS:
        body = fixtures.request_path("sle-synthea-large", hook).read_bytes()
        assert len(body) > 200_000
        client.post(service_url(hook), data=body, headers={"Content-Type": "application/json"})  # warm-up
        durations = []
        for _ in range(5):
            start = time.perf_counter()
            response = client.post(service_url(hook), data=body, headers={"Content-Type": "application/json"})
            durations.append(time.perf_counter() - start)
            assert response.status_code == 200
        assert statistics.median(durations) < 0.5, (hook, durations)


@pytest.mark.requirement("cds-hooks_2.0@214")
def test_extension_values_are_json_objects_in_discovery_and_in_requests(make_app):
    """A plugin's discovery extension is sent as an object; a request extension must be one (Epic sends
    ``com.epic.cdshooks.request.*`` members), anything else is a malformed request."""
    from conftest import patient_view_request

    from cds_hooks import ServiceDefinition, hookimpl

    class WithExtension:
        @hookimpl
        def cds_services(self, config):
            return [ServiceDefinition(id="ext", hook="patient-view", description="Says nothing.",
                                      handler=lambda request: [],
                                      extension={"org.example.capability": {"version": 1}})]

    client = make_app(plugins=(WithExtension(),)).test_client()
    (entry,) = client.get("/cds-services").get_json()["services"]
    assert entry["extension"] == {"org.example.capability": {"version": 1}}
    epic = {"com.epic.cdshooks.request.bpa-trigger-action": "60", "com.epic.cdshooks.request.fhir-version": "R4"}
    assert client.post("/cds-services/ext", json=patient_view_request(extension=epic)).status_code == 200
    for malformed in ("R4", ["R4"], 5):
        assert client.post("/cds-services/ext", json=patient_view_request(extension=malformed)).status_code == 400
