"""Configuration errors name the setting and the fix, in one line, with exit status 2 and no traceback,
whichever command meets them; booleans have one list of spellings, the one the READMEs give."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from readiness import free_port

from cds_hooks import config
from cds_hooks.cli import cli

README = (ROOT / "README.md").read_text()
DEPLOY_README = (ROOT / "deploy" / "README.md").read_text()


# --- booleans: one list of spellings ---------------------------------------------------------------------

@pytest.mark.parametrize("word", config.TRUE_WORDS + tuple(w.upper() for w in config.TRUE_WORDS))
def test_every_true_spelling_is_true(word):
    assert config.load({"LUPUS_CDS_METRICS": "0", "LUPUS_CDS_ALLOW_UNSIGNED": word},
                       environ={})["LUPUS_CDS_ALLOW_UNSIGNED"] is True


@pytest.mark.parametrize("word", config.FALSE_WORDS + (" Off ",))
def test_every_false_spelling_is_false(word):
    assert config.load({"LUPUS_CDS_METRICS": word}, environ={})["LUPUS_CDS_METRICS"] is False


@pytest.mark.parametrize("word", ["maybe", "2", "enabled", "y", "nope"])
def test_anything_else_is_an_error_naming_the_setting_and_the_spellings(word):
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={"LUPUS_CDS_ALLOW_UNSIGNED": word})
    message = str(caught.value)
    assert message.startswith("LUPUS_CDS_ALLOW_UNSIGNED: ") and repr(word) in message
    assert all(spelling in message for spelling in config.TRUE_WORDS + config.FALSE_WORDS)


def test_an_empty_variable_means_the_default():
    assert config.load(environ={"LUPUS_CDS_METRICS": "", "LUPUS_CDS_JWT_LEEWAY": ""})["LUPUS_CDS_METRICS"] is True


def test_the_readmes_give_the_accepted_spellings():
    words = "`/`".join(config.TRUE_WORDS) + "` and `" + "`/`".join(config.FALSE_WORDS)
    assert f"booleans accept `{words}` (any case" in README.replace("\n", " ")
    assert f"Booleans accept `{words}` (any case" in DEPLOY_README.replace("\n", " ")


def test_the_clinical_switches_use_the_same_spellings():
    from plugin.settings import SETTINGS, parse_value

    switch = next(spec for spec in SETTINGS.values() if spec.kind is bool)
    assert all(parse_value(switch, word) is True for word in config.TRUE_WORDS)
    assert all(parse_value(switch, word) is False for word in config.FALSE_WORDS)
    with pytest.raises(config.ConfigError, match=switch.key):
        parse_value(switch, "maybe")


# --- other settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "value", "says"), [
    ("LUPUS_CDS_FHIR_BUDGET", "three", "not a number"),
    ("LUPUS_CDS_FHIR_TIMEOUT", "inf", "finite"),
    ("LUPUS_CDS_JWT_LEEWAY", "1.5", "whole number"),
    ("LUPUS_CDS_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ("LUPUS_CDS_LOG_FORMAT", "xml", "json, text, none"),
    ("LUPUS_CDS_DATABASE_URL", "feedback.sqlite3", "not a database URL"),
    ("LUPUS_CDS_DATABASE_URL", "oracle+nosuchdriver://u:pw@h/db", "unknown database type"),
    ("LUPUS_CDS_DATABASE_URL", "postgresql+psycopg2://u:hunter2@h/db", "driver 'psycopg2' is not installed"),
])
def test_a_setting_of_the_wrong_kind_is_named(setting, value, says):
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ={setting: value})
    assert str(caught.value).startswith(f"{setting}: ") and says in str(caught.value)
    assert "hunter2" not in str(caught.value)  # database passwords are masked


# --- every command: one line, exit 2, no traceback ---------------------------------------------------------

REQUEST = str(ROOT / "fixtures" / "requests" / "sle-twitching-no-labs" / "patient-view.json")
BAD_ENVIRONMENTS = [
    ({"LUPUS_CDS_ALLOW_UNSIGNED": "maybe"}, "LUPUS_CDS_ALLOW_UNSIGNED", ["rules"]),
    ({"LUPUS_CDS_METRICS": "maybe"}, "LUPUS_CDS_METRICS", ["evaluate", REQUEST]),
    ({"LUPUS_CDS_CLIENTS": "/nonexistent/clients.json"}, "LUPUS_CDS_CLIENTS", ["evaluate", REQUEST]),
    ({"LUPUS_CDS_DATABASE_URL": "not a url"}, "LUPUS_CDS_DATABASE_URL", ["feedback-report"]),
    ({"LUPUS_CDS_SMART_CLIENTS": "/nonexistent/smart.json"}, "LUPUS_CDS_SMART_CLIENTS", ["evaluate", REQUEST]),
    ({"LUPUS_CDS_LAB_WINDOW_DAYS": "a month"}, "LUPUS_CDS_LAB_WINDOW_DAYS", ["evaluate", REQUEST]),
    ({"LUPUS_CDS_LAB_WINDOW_DAYS": "a month"}, "LUPUS_CDS_LAB_WINDOW_DAYS", ["rules"]),
]


@pytest.fixture(scope="module", autouse=True)
def plugin_commands():
    """``rules``, ``demo``, ``sandbox``: added to the command group by the plugin, as ``main()`` does."""
    from cds_hooks.plugins import plugin_manager

    plugin_manager().hook.cds_cli_commands(cli=cli)


@pytest.mark.parametrize(("environment", "setting", "command"), BAD_ENVIRONMENTS,
                         ids=[f"{c[0]}-{s}" for _, s, c in BAD_ENVIRONMENTS])
def test_commands_report_a_bad_setting_in_one_line(monkeypatch, environment, setting, command):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {setting}: ")


def test_an_unreadable_clients_file_says_how_to_fix_it(tmp_path, monkeypatch):
    unreadable = tmp_path / "clients.json"
    unreadable.mkdir()  # a folder: unreadable as a file, even for root
    monkeypatch.setenv("LUPUS_CDS_CLIENTS", str(unreadable))
    result = CliRunner().invoke(cli, ["evaluate", str(ROOT / "fixtures" / "spec-examples" / "feedback-accepted.json")])
    assert result.exit_code == 1 and "not a CDS Hooks request" in result.output  # the request is looked at first
    result = CliRunner().invoke(cli, ["evaluate", REQUEST])
    assert result.exit_code == 2
    assert f"LUPUS_CDS_CLIENTS: cannot read the trusted-clients file {unreadable}" in result.output
    assert "name a readable JSON file" in result.output


SERVE_ENVIRONMENTS = [(environment, setting) for environment, setting, _ in BAD_ENVIRONMENTS[:5]]


@pytest.mark.parametrize(("environment", "setting"), SERVE_ENVIRONMENTS, ids=[s for _, s in SERVE_ENVIRONMENTS])
def test_serve_refuses_a_bad_setting_before_it_starts_the_server(environment, setting):
    """A real process: the line, exit status 2, and no traceback on stderr (nothing starts listening)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUPUS_CDS_")}
    env.update(environment)
    process = subprocess.Popen([sys.executable, "-c", "from cds_hooks.cli import main; main()", "serve", "--port",
                                str(free_port())], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
        pytest.fail("serve started despite a bad setting")
    assert process.returncode == 2, err
    assert "Traceback" not in err + out
    (line,) = err.strip().splitlines()
    assert line.startswith(f"Error: {setting}: ")


def test_feedback_report_names_an_unusable_database(tmp_path):
    result = CliRunner().invoke(cli, ["feedback-report", "--database-url", "nonsense"])
    assert result.exit_code == 2 and "'--database-url'" in result.output and "not a database URL" in result.output
    port = free_port()  # reserved for this process: nothing listens there
    result = CliRunner().invoke(cli, ["feedback-report", "--database-url",
                                      f"postgresql+psycopg://reader:s3cret@127.0.0.1:{port}/cds"])
    assert result.exit_code == 1 and "does not answer" in result.output and "--database-url" in result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["feedback-report", "--database-url", f"sqlite:///{tmp_path / 'f.sqlite3'}",
                                      "--html", str(tmp_path / "no-such-folder" / "report.html")])
    assert result.exit_code != 0 and "cannot write" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_clients_file_that_is_not_json_is_named(tmp_path, monkeypatch):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"iss": "https://ehr.example.org"}]}))
    monkeypatch.setenv("LUPUS_CDS_CLIENTS", str(path))
    result = CliRunner().invoke(cli, ["evaluate", REQUEST])
    assert result.exit_code == 2 and "LUPUS_CDS_CLIENTS: " in result.output and "'jwks'" in result.output
