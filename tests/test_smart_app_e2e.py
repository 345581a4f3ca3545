"""The lab and steroid timeline end to end, against a real FHIR server and a real OAuth 2 / OpenID Connect
authorization server playing the EHR (``smart_testbed.py``): hook call -> the card's ``smart`` link -> EHR
launch in an iframe -> the page in headless Chromium, whose charts are read back and compared with the
fixture patient's resources. Then every way a launch can fail, each a readable page with its status.

Screenshots of each view are kept under ``tmp/artefacts/smart-app/`` (or ``$LUPUS_CDS_TEST_ARTEFACTS``);
the test prints their paths.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from urllib.parse import urljoin

import pytest
import requests

pytest.register_assert_rewrite("smart_testbed")  # a plugin module (below) imported here first

import trends_data  # noqa: E402
from smart_testbed import artefact_dir, hook_request  # noqa: E402

pytestmark = pytest.mark.integration
pytest_plugins = ["smart_testbed"]

SERVICE = "/cds-services/lupus-fasciculation-patient-view"
VIEW_CHARTS = {"ck": ["chart-ck"], "electrolytes": ["chart-potassium", "chart-magnesium", "chart-calcium"],
               "steroid": ["chart-steroid"]}


def smart_link(world, topic):
    response = requests.post(world.service.url + SERVICE, json=hook_request(world, trends_data.PATIENT_ID),
                             timeout=60)
    assert response.status_code == 200, response.text
    for card in response.json()["cards"]:
        if card["source"]["topic"]["code"] == topic:
            return next(link for link in card["links"] if link["type"] == "smart")
    raise AssertionError(f"no {topic} card: {[c['source']['topic']['code'] for c in response.json()['cards']]}")


def plotted(frame, chart_id):
    """``{data-source: data-value}`` read from the rendered chart in the browser."""
    return frame.locator(f"svg#{chart_id} circle.dot").evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.source, Number(e.dataset.value)]))")


def table_values(frame, table_id):
    """``{FHIR resource: charted value}`` read from the chart's table (the screen-reader view)."""
    rows = frame.locator(f"table#{table_id} tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    return {cells[-1]: cells[2] for cells in rows}


@pytest.mark.timeout(300)  # three launches in a real browser; a loaded CI machine is slow
def test_hook_card_link_launches_the_timeline_and_its_charts_show_the_patients_values(smart_world, chromium,
                                                                                        caplog):
    world = smart_world
    caplog.set_level(logging.DEBUG)
    expected = trends_data.expected_points(world.patients["timeline"])
    folder = artefact_dir("smart-app")
    context = chromium.new_context(viewport={"width": 1200, "height": 1000})
    context.set_default_timeout(90_000)  # a loaded CI machine: the launch is several round trips
    page = context.new_page()
    try:
        for view, topic in (("ck", "ck-elevated"), ("electrolytes", "electrolyte-abnormal"),
                            ("steroid", "steroid-review")):
            link = smart_link(world, topic)
            assert link["url"] == world.service.launch_url and link["appContext"] == f"view={view}"
            # the EHR launches the link in an iframe, passing appContext on to the token response
            page.goto(world.ehr.open_url(link["url"], trends_data.PATIENT_ID, appContext=link["appContext"]))
            frame = page.frame_locator("iframe#app")
            first = frame.locator("section.view").first
            first.wait_for()
            assert first.get_attribute("data-view") == view  # appContext opened this view first
            assert "Tess Timeline" in frame.locator("header.banner").inner_text()  # need_patient_banner
            for chart_id in VIEW_CHARTS[view]:
                if chart_id == "chart-steroid":
                    continue
                values = plotted(frame, chart_id)
                assert set(values) == set(expected[chart_id]), chart_id
                for source, value in expected[chart_id].items():
                    assert values[source] == pytest.approx(value, abs=0.006), (chart_id, source)
            # a screenshot of the view: the app's own page (this browser's session) opened at the top level,
            # so the whole section is drawn, not only what fits in the EHR's iframe
            shot = folder / f"view-{view}.png"
            whole = context.new_page()
            whole.goto(frame.locator("html").evaluate("() => location.href"))
            if view == "ck":
                whole.screenshot(path=str(folder / "page-top.png"), clip={"x": 0, "y": 0, "width": 1200,
                                                                           "height": 620})
            whole.locator(f"section#view-{view}").screenshot(path=str(shot))
            whole.close()
            print(f"screenshot of the {view} view: {shot}")
            assert shot.stat().st_size > 10_000

        # the same numbers in the table a screen reader reads
        table = table_values(frame, "table-ck")
        assert table["Observation/ck-23"].startswith("828")
        assert table["Observation/ck-error"] == "not plotted"
        # the steroid view: where the taper is now, the pulse above the axis, each step traced to its order
        steps = frame.locator("svg#chart-steroid g.step").evaluate_all(
            "els => els.map(e => [e.dataset.source, e.dataset.value, e.dataset.start])")
        plan = trends_data.steroid_plan(world.now)
        assert ["MedicationRequest/pred-taper", "10", plan["taper"][4].date().isoformat()] in steps
        assert ["MedicationRequest/mp-pulse", "1250", plan["pulse"].date().isoformat()] in steps
        assert "Now: 10 mg/day prednisone equivalent (medium)" in frame.locator("#view-steroid .summary").inner_text()
        given = frame.locator("svg#chart-steroid circle.given").evaluate_all("els => els.map(e => e.dataset.source)")
        assert sorted(given) == [f"MedicationAdministration/mp-given-{i}" for i in range(3)]
        page.screenshot(path=str(folder / "ehr-with-app.png"), full_page=True)

        # tokens stay on the server: never in a page, a URL, a cookie or the logs
        sessions = world.service.sessions()
        tokens = [s["access_token"] for s in sessions if "access_token" in s]
        assert tokens
        cookies = {c["name"]: c for c in context.cookies()}
        app_cookie = cookies["lupus_cds_smart"]
        assert app_cookie["httpOnly"] and app_cookie["sameSite"] == "Lax"  # http://127.0.0.1
        html = frame.locator("html").inner_html()
        seen = " ".join([html, page.url, frame.locator("html").evaluate("() => location.href"),
                         *(c["value"] for c in context.cookies()), caplog.text])
        for token in tokens:
            assert token not in seen
    finally:
        context.close()


# -------------------------------------------------------------------------------------- refusals


class Browser:
    """A launch driven with ``requests`` (cookies kept), for the refusal cases."""

    def __init__(self, world):
        self.world = world
        self.http = requests.Session()
        self.last_callback: str | None = None

    def open(self, *, iss=None, launch=None, patient=trends_data.PATIENT_ID, **options):
        if launch is None:
            made = self.world.ehr.launch(patient, **options)
            launch, iss = made["launch"], iss or made["iss"]
        url = self.world.service.launch_url
        response = self.http.get(url, params={"iss": iss or self.world.ehr.fhir_base, "launch": launch},
                                 allow_redirects=False, timeout=60)
        for _ in range(10):
            if response.status_code not in (302, 303):
                return response
            target = urljoin(response.url, response.headers["Location"])
            if "/smart-apps/trends/callback" in target:
                self.last_callback = target
            response = self.http.get(target, allow_redirects=False, timeout=60)
        raise AssertionError("too many redirects")


def readable(response, status, words):
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("text/html")
    assert words in response.text, response.text[:800]
    assert "Traceback" not in response.text


def test_a_reused_launch_is_refused_by_the_ehr_and_shown_as_such(smart_world):
    made = smart_world.ehr.launch(trends_data.PATIENT_ID)
    first = Browser(smart_world).open(launch=made["launch"])
    readable(first, 200, "Lab and steroid timeline")
    again = Browser(smart_world).open(launch=made["launch"])
    readable(again, 400, "launch already used")


def test_an_unknown_launch_is_refused(smart_world):
    readable(Browser(smart_world).open(launch="not-a-launch-the-ehr-made"), 400, "unknown launch")


def test_a_reused_callback_is_refused(smart_world):
    browser = Browser(smart_world)
    readable(browser.open(), 200, "Lab and steroid timeline")
    assert browser.last_callback
    replay = browser.http.get(browser.last_callback, allow_redirects=False, timeout=30)
    readable(replay, 400, "This launch is not known")


def test_a_callback_delivered_to_another_browser_is_refused(smart_world):
    started = Browser(smart_world)
    launch = smart_world.ehr.launch(trends_data.PATIENT_ID)
    response = started.http.get(smart_world.service.launch_url, allow_redirects=False, timeout=30,
                                params={"iss": launch["iss"], "launch": launch["launch"]})
    while "/smart-apps/trends/callback" not in response.headers.get("Location", ""):
        response = started.http.get(urljoin(response.url, response.headers["Location"]), allow_redirects=False,
                                    timeout=30)
    stranger = requests.get(response.headers["Location"], allow_redirects=False, timeout=30)
    readable(stranger, 400, "belongs to another browser")


def test_a_wrong_aud_is_refused_by_the_ehr(smart_world):
    """The app sends aud = the launch's iss; the EHR's authorization server issues tokens for its own FHIR base
    only, so a launch naming another (allowed) base is refused, and the launch id is not spent."""
    made = smart_world.ehr.launch(trends_data.PATIENT_ID)
    readable(Browser(smart_world).open(iss=made["other_iss"], launch=made["launch"]), 400, "aud must be")
    readable(Browser(smart_world).open(launch=made["launch"]), 200, "Lab and steroid timeline")


def test_an_iss_not_allowed_is_refused_before_any_request(smart_world):
    response = Browser(smart_world).open(iss="http://127.0.0.1:1/fhir", launch="anything")
    readable(response, 403, "not allowed to launch")


def test_a_scope_the_ehr_did_not_grant_is_a_403_page(smart_world):
    response = Browser(smart_world).open(deny="patient/Observation.rs")
    readable(response, 403, "did not grant access")
    assert "Observation" in response.text


def test_access_refused_by_the_clinician_is_a_403_page(smart_world):
    readable(Browser(smart_world).open(refuse="true"), 403, "Access was not granted")


def test_a_token_the_fhir_server_finds_expired_is_a_readable_page(smart_world):
    readable(Browser(smart_world).open(expiredToken="true"), 401, "The session has expired")


def test_a_session_past_its_expiry_is_a_readable_page(smart_world):
    browser = Browser(smart_world)
    page = browser.open()
    readable(page, 200, "Lab and steroid timeline")
    clock = smart_world.service.clock
    try:
        clock.now = clock.start + timedelta(seconds=301)  # the test EHR's tokens live 300 s
        readable(browser.http.get(page.url, timeout=30), 401, "The session has expired")
    finally:
        clock.reset()


def test_a_fhir_server_that_is_down_is_a_readable_page(smart_world):
    browser = Browser(smart_world)
    page = browser.open()
    readable(page, 200, "Lab and steroid timeline")
    smart_world.ehr.fhir_down(True)
    try:
        readable(browser.http.get(page.url, timeout=60), 502, "cannot be reached")
    finally:
        smart_world.ehr.fhir_down(False)
    readable(browser.http.get(page.url, timeout=60), 200, "Lab and steroid timeline")


def test_a_patient_without_data_is_a_readable_page(smart_world):
    response = Browser(smart_world).open(patient="trends-empty", needPatientBanner="false")
    readable(response, 200, "No creatine kinase results in the last two years.")
    assert "Eli Empty" not in response.text  # need_patient_banner false: the EHR shows its own banner
    assert not re.search(r"<svg", response.text)
