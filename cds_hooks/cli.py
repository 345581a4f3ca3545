"""The ``lupus-cds`` command line: serve the API, evaluate one hook request in-process, and whatever
commands the installed plugins add (``cds_cli_commands``)."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

import click

from . import config as settings
from .app import check_configuration, create_app
from .cards import response_problems
from .config import ConfigError
from .plugins import plugin_manager
from .report import feedback_report

INDICATOR_MARK = {"critical": "!!", "warning": "! ", "info": "i "}


class ConfigurationProblem(click.ClickException):
    """A setting that cannot be used: one line naming it and the fix, exit status 2, no traceback."""

    exit_code = 2


class _Commands(click.Group):
    """Every command's configuration errors end as one line and exit status 2, whichever command hits them."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise ConfigurationProblem(str(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lupus-cds")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """lupus-cds: a CDS Hooks service (see README.md)."""
    if ctx.invoked_subcommand == "serve" and not {"-h", "--help"} & set(ctx.args):
        # each server worker builds the app: check the settings here, where a mistake is one line.
        check_configuration()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Worker processes (default: LUPUS_CDS_WORKERS, else one per CPU).")
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the API at http://HOST:PORT/cds-services with granian (a production HTTP server)."""
    from .auth import load_clients
    from .server import build_server, port_free, start_lines

    if not port_free(host, port):
        raise click.ClickException(f"{host}:{port} is in use (another server listens there); stop it, or choose "
                                   "another port with --port")
    try:
        server = build_server(host=host, port=port, workers=workers)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = settings.load({})  # checked already (cli group): this only reads it again
    clients = len(load_clients(cfg["LUPUS_CDS_CLIENTS"])) if cfg.get("LUPUS_CDS_CLIENTS") else 0
    for line in start_lines(cfg, host, port, server.workers, clients):
        click.echo(line, err=True)
    server.serve()


cli.add_command(feedback_report)


def _pick_service_id(app: Any, hook: Any, wanted: str | None) -> str:
    services = app.extensions["cds_hooks"].services
    if wanted:
        if not any(service_id == wanted for service_id, _ in services):
            raise click.ClickException(f"no service {wanted!r}; known: {sorted({s for s, _ in services})}")
        return wanted
    matches = sorted(service_id for service_id, service_hook in services if service_hook == hook)
    if not matches:
        hooks = ", ".join(sorted({service_hook for _, service_hook in services}))
        raise click.ClickException(f"no service handles hook {hook!r} (hooks served: {hooks})")
    if len(matches) != 1:
        raise click.ClickException(f"{len(matches)} services handle hook {hook!r}; choose one with --service")
    return matches[0]


class Instant(click.ParamType):
    """A date (``2026-11-25``: the start of that day, UTC) or an ISO 8601 date-time, with an offset or
    without one (then UTC): ``2026-11-25T12:00``, ``2026-11-25T12:00:00Z``, ``2026-11-25T13:00:00+01:00``."""

    name = "INSTANT"
    _FORM = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?")

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if not self._FORM.fullmatch(text):
                raise ValueError(text)
            instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not a date (2026-11-25) or date-time (2026-11-25T12:00:00Z)", param, ctx)
        return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


@cli.command()
@click.argument("request_file", type=click.File("rb"))
@click.option("--service", "service_id", default=None, help="Service id (default: the one for the request's hook).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw CDS Hooks response.")
@click.option("--now", type=Instant(), default=None,
              help="Evaluate as of this date (its start, UTC) or date-time (UTC unless it has an offset); "
                   "default: now.")
def evaluate(request_file: Any, service_id: str | None, as_json: bool, now: datetime | None) -> None:
    """Run one hook request (a JSON file, or - for stdin) in-process and print the cards."""
    raw = request_file.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise click.ClickException(f"{request_file.name} is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("hook"), str) or not body["hook"]:
        raise click.ClickException(f"{request_file.name} is not a CDS Hooks request: no `hook`")
    clock = (lambda: now) if now is not None else None
    # In process, nothing listens: the unsigned-mode warning (and routine INFO lines) would only be noise.
    app = create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://",
                      "LUPUS_CDS_REPLAY_DB": "memory",
                      "LUPUS_CDS_LOG_FORMAT": "text", "LUPUS_CDS_LOG_LEVEL": "ERROR",
                      "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0}, clock=clock)
    target = _pick_service_id(app, body["hook"], service_id)
    response = app.test_client().post(f"/cds-services/{target}", data=raw,
                                      headers={"Content-Type": "application/json"})
    if as_json:
        click.echo(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
    elif response.status_code != 200:
        outcome = response.get_json() or {}
        for issue in outcome.get("issue", []):
            click.echo(f"HTTP {response.status_code}: {issue.get('diagnostics', issue.get('code'))}", err=True)
    else:
        click.echo(format_cards(response.get_json()))
    if response.status_code != 200:
        sys.exit(1)


def format_cards(response: dict[str, Any]) -> str:
    """Cards as plain text for a person at a terminal."""
    cards = response.get("cards", [])
    if not cards:
        return "No cards: no guidance for this request."
    lines: list[str] = []
    for number, card in enumerate(cards, 1):
        topic = card.get("source", {}).get("topic", {}).get("code", "")
        lines.append(f"[{number}] {INDICATOR_MARK.get(card.get('indicator'), '  ')}"
                     f"{card.get('indicator', '?').upper():8} {topic}")
        lines.append(f"    {card.get('summary', '')}")
        for detail_line in (card.get("detail") or "").splitlines():
            lines.append(f"      {detail_line}")
        for suggestion in card.get("suggestions", []):
            lines.append(f"    -> suggestion: {suggestion.get('label')}")
        for link in card.get("links", []):
            lines.append(f"    -> link: {link.get('label')} <{link.get('url')}>")
        source = card.get("source", {})
        lines.append(f"    source: {source.get('label', '')}" + (f" <{source['url']}>" if source.get("url") else ""))
        lines.append("")
    problems = response_problems(response)
    if problems:
        lines.append("WARNING: the response breaks CDS Hooks rules: " + "; ".join(problems))
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lupus-cds`` console script."""
    pm = plugin_manager()
    pm.hook.cds_cli_commands(cli=cli)
    cli.main(args=argv, prog_name="lupus-cds")


if __name__ == "__main__":  # pragma: no cover
    main()
