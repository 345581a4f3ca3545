"""What ``lupus-cds serve`` says before it serves: one plain line per fact (where, how many trusted clients,
whether client JWTs are checked, and what to do when no call can pass), and a port in use as one line naming
``--port`` rather than a server that fails to bind."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from cds_hooks import config
from cds_hooks.cli import cli
from cds_hooks.server import port_free, start_lines


def settings(**overrides):
    return config.load(overrides, environ={})


def test_start_lines_say_where_and_how_many_clients_are_trusted():
    lines = start_lines(settings(LUPUS_CDS_ALLOW_UNSIGNED="0"), "127.0.0.1", 8080, 2, clients=3)
    assert lines[0] == "lupus-cds: serving http://localhost:8080/cds-services with 2 workers"
    assert lines[1] == "lupus-cds: client JWTs are checked: 3 trusted clients loaded from LUPUS_CDS_CLIENTS"


def test_no_trusted_client_warns_that_every_hook_call_gets_401_and_says_what_to_do():
    (_, warning) = start_lines(settings(), "0.0.0.0", 9000, 1, clients=0)
    assert "WARNING" in warning and "every hook call will be refused with 401" in warning
    assert "LUPUS_CDS_CLIENTS" in warning and "lupus-cds sandbox" in warning


def test_unsigned_mode_is_stated():
    (_, line) = start_lines(settings(LUPUS_CDS_ALLOW_UNSIGNED="1"), "127.0.0.1", 8080, 1, clients=0)
    assert "NOT checked" in line and "LUPUS_CDS_ALLOW_UNSIGNED" in line


def test_a_port_in_use_is_one_line_naming_port(monkeypatch):
    monkeypatch.delenv("LUPUS_CDS_CLIENTS", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert result.exit_code == 1
    assert f"127.0.0.1:{port} is in use" in result.output and "--port" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
