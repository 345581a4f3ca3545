"""The ``lupus-cds`` command line (evaluate, plugin commands)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import patient_view_request

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
