"""The ``lupus-cds`` command line: serve the API, evaluate one hook request in-process, and whatever
commands the installed plugins add (``cds_cli_commands``)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from .app import create_app
from .cards import response_problems
from .plugins import plugin_manager
from .report import feedback_report

INDICATOR_MARK = {"critical": "!!", "warning": "! ", "info": "i "}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lupus-cds")
def cli() -> None:
    """lupus-cds: a CDS Hooks service (see README.md)."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="TCP port.")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Worker processes (default: LUPUS_CDS_WORKERS, else one per CPU).")
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the API at http://HOST:PORT/cds-services with granian (a production HTTP server)."""
    from .server import build_server

    try:
        server = build_server(host=host, port=port, workers=workers)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    server.serve()


cli.add_command(feedback_report)


def _pick_service_id(app: Any, hook: Any, wanted: str | None) -> str:
    services = app.extensions["cds_hooks"].services
    if wanted:
        if not any(service_id == wanted for service_id, _ in services):
            raise click.ClickException(f"no service {wanted!r}; known: {sorted({s for s, _ in services})}")
        return wanted
    matches = sorted(service_id for service_id, service_hook in services if service_hook == hook)
    if len(matches) != 1:
        raise click.ClickException(f"{len(matches)} services handle hook {hook!r}; choose one with --service")
    return matches[0]


@cli.command()
@click.argument("request_file", type=click.File("rb"))
@click.option("--service", "service_id", default=None, help="Service id (default: the one for the request's hook).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw CDS Hooks response.")
@click.option("--now", default=None, help="Evaluate as of this ISO instant (default: now).")
def evaluate(request_file: Any, service_id: str | None, as_json: bool, now: str | None) -> None:
    """Run one hook request (a JSON file, or - for stdin) in-process and print the cards."""
    raw = request_file.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise click.ClickException(f"{request_file.name} is not JSON: {exc}") from None
    clock = None
    if now:
        instant = datetime.fromisoformat(now.replace("Z", "+00:00"))
        clock = lambda: instant  # noqa: E731
    app = create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://",
                      "LUPUS_CDS_REPLAY_DB": "memory",
                      "LUPUS_CDS_LOG_FORMAT": "text"}, clock=clock)  # a person reads this stderr
    target = _pick_service_id(app, body.get("hook") if isinstance(body, dict) else None, service_id)
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
