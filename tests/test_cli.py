"""The ``lupus-cds`` command line (evaluate, plugin commands)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import ROOT, patient_view_request

from cds_hooks.cli import cli, format_cards, main


def test_format_cards_prints_indicator_topic_summary_and_suggestions():
    text = format_cards({"cards": [{
        "summary": "Order CK", "indicator": "warning", "detail": "line one\nline two",
        "source": {"label": "Guide", "url": "https://g.example", "topic": {"system": "s", "code": "ck-testing"}},
        "selectionBehavior": "any", "suggestions": [{"label": "Order creatine kinase"}],
        "links": [{"label": "Mayo", "url": "https://m.example", "type": "absolute"}]}]})
    assert "WARNING" in text and "ck-testing" in text and "Order CK" in text
    assert "suggestion: Order creatine kinase" in text and "line two" in text
    assert "WARNING: the response breaks" not in text


def test_format_cards_flags_non_conformant_cards():
    assert "breaks CDS Hooks rules" in format_cards({"cards": [{"summary": "x" * 150, "indicator": "info",
                                                                "source": {"label": "s"}}]})


def test_format_no_cards():
    assert format_cards({"cards": []}).startswith("No cards")


def test_evaluate_reports_http_errors_and_exits_non_zero(tmp_path):
    request_file = tmp_path / "bad.json"
    body = patient_view_request()
    del body["context"]["patientId"]
    request_file.write_text(json.dumps(body))
    result = CliRunner().invoke(cli, ["evaluate", str(request_file), "--service",
                                      "lupus-fasciculation-patient-view"])
    assert result.exit_code == 1
    assert "HTTP 400" in result.output


def test_evaluate_rejects_non_json(tmp_path):
    request_file = tmp_path / "bad.json"
    request_file.write_text("{nope")
    result = CliRunner().invoke(cli, ["evaluate", str(request_file)])
    assert result.exit_code != 0 and "not JSON" in result.output


def test_main_adds_plugin_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "evaluate", "rules"):
        assert command in out


REQUEST = ROOT / "fixtures" / "requests" / "sle-twitching-no-labs" / "patient-view.json"


@pytest.mark.parametrize("now", ["2026-11-25", "2026-11-25T12:00", "2026-11-25T12:00:00", "2026-11-25 12:00:00",
                                 "2026-11-25T12:00:00Z", "2026-11-25T13:00:00+01:00", "2026-11-25T12:00:00.5"])
def test_evaluate_now_takes_a_date_or_a_date_time_without_offset_as_utc(now):
    """A date is the start of that day (UTC); a date-time without an offset is UTC: the fixture request
    gives its golden cards instead of an internal error."""
    from plugin import fixtures

    result = CliRunner().invoke(cli, ["evaluate", "--json", "--now", now, str(REQUEST)])
    assert result.exit_code == 0, result.output
    cards = json.loads(result.output)["cards"]
    assert fixtures.card_digest(cards) == fixtures.load_expected("sle-twitching-no-labs", "patient-view")


@pytest.mark.parametrize("now", ["yesterday", "2026-13-01", "25/11/2026", "2026-11-25T25:00", "1764072000",
                                 "2026-W48-3", ""])
def test_evaluate_now_refuses_anything_else_as_a_usage_error(now):
    result = CliRunner().invoke(cli, ["evaluate", "--now", now, str(REQUEST)])
    assert result.exit_code == 2
    assert "Invalid value for '--now'" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("document", [{"resourceType": "Bundle"}, [1, 2], "text", {"hook": 5}, {"hook": ""}])
def test_evaluate_says_when_a_json_file_is_not_a_hook_request(tmp_path, document):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["evaluate", str(path)])
    assert result.exit_code == 1
    assert f"{path} is not a CDS Hooks request: no `hook`" in result.output
    assert "ALLOW_UNSIGNED" not in result.output  # no unsigned-mode warning either


def test_evaluate_prints_no_unsigned_mode_warning(capfd):
    result = CliRunner().invoke(cli, ["evaluate", "--now", "2026-11-25", str(REQUEST)])
    assert result.exit_code == 0 and "ck-testing" in result.output
    captured = capfd.readouterr()
    assert "ALLOW_UNSIGNED" not in result.output + captured.out + captured.err


def test_demo_shows_whole_summaries():
    """Summaries used to be cut where the line reached 110 characters."""
    from plugin import demo, fixtures

    cards = [card for name in fixtures.patient_names() for card in fixtures.load_expected(name, "patient-view")]
    lines = demo.format_cards(cards)
    assert all(line.endswith(card["summary"]) for card, line in zip(cards, lines, strict=True))
    assert max(map(len, lines)) > 110, "some fixture card is long enough to have been cut"


@pytest.mark.parametrize("args,says", [
    (["evaluate", "{dir}"], "Is a directory"),
    (["evaluate", "{dir}/missing.json"], "No such file"),
    (["evaluate", "{file:\xff\xfe}"], "is not JSON"),
    (["evaluate", '{file:{"hook": "patient-view"}}'], "HTTP 400"),
    (["evaluate", '{file:{"hook": "no-such-hook", "hookInstance": "x", "context": {}}}'], "no service handles hook"),
    (["evaluate", "--service", "nope", str(REQUEST)], "no service 'nope'"),
    (["demo", "no-such-patient"], "unknown fixture patient"),
    (["feedback-report", "--html", "{dir}"], "is a directory"),
    (["sandbox", "--workdir", "{file:x}"], "is a file"),
])
def test_bad_input_is_one_error_never_a_traceback(tmp_path, args, says):
    """No command prints a traceback or an HTTP 500 for bad input."""
    from cds_hooks.plugins import plugin_manager

    plugin_manager().hook.cds_cli_commands(cli=cli)  # demo, sandbox: as main() adds them

    def fill(arg: str) -> str:
        if arg.startswith("{file:"):
            path = tmp_path / "input.json"
            path.write_bytes(arg[6:-1].encode("latin-1"))
            return str(path)
        return arg.replace("{dir}", str(tmp_path))

    result = CliRunner().invoke(cli, [fill(arg) for arg in args])
    assert result.exit_code in (1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert says in result.output and "Traceback" not in result.output and "HTTP 500" not in result.output
