"""``lupus-cds demo``: every fixture hook request through the service, in process, as of the fixtures'
anchor date; prints each patient's cards and checks them against the golden files.

Exit status 1 when any card list differs from ``fixtures/expected/<patient>/<hook>.json`` (``--update``
rewrites the golden files instead). Requests are the checked-in files with full prefetch, so the demo
needs no FHIR server and no network.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from . import fixtures

MARK = {"critical": "!!", "warning": "! ", "info": "i "}


def make_app() -> Any:
    """The service as ``lupus-cds evaluate`` builds it, with its clock at the fixtures' anchor."""
    from cds_hooks import create_app

    return create_app({"LUPUS_CDS_ALLOW_UNSIGNED": True, "LUPUS_CDS_DATABASE_URL": "sqlite://",
                       "LUPUS_CDS_LOG_FORMAT": "none", "LUPUS_CDS_METRICS": False,
                       "LUPUS_CDS_ISSUED_CARDS_QUEUE": 0},
                      clock=lambda: fixtures.ANCHOR)


def evaluate(client: Any, name: str, hook: str) -> list[dict[str, str]]:
    """The card digest of one checked-in request (raises on a non-200 answer)."""
    body = fixtures.request_path(name, hook).read_bytes()
    response = client.post(f"/cds-services/{fixtures.SERVICE_PREFIX}-{hook}", data=body,
                           headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"{name}/{hook}: HTTP {response.status_code} {response.get_data(as_text=True)[:500]}")
    return fixtures.card_digest(response.get_json()["cards"])


def format_cards(cards: list[dict[str, str]]) -> list[str]:
    """One line per card with its whole summary (at most 140 characters by the CDS Hooks rules)."""
    if not cards:
        return ["    (no cards)"]
    return [f"    {MARK.get(card['indicator'], '  ')}{card['indicator']:<8} {card['topic']:<30} {card['summary']}"
            for card in cards]


def run_all(update: bool = False, echo: Callable[[str], None] = click.echo,
            only: tuple[str, ...] = ()) -> list[str]:
    """Evaluate every fixture request; returns the ``patient/hook`` pairs that differ from their golden
    file (after rewriting them when ``update``)."""
    app = make_app()
    client = app.test_client()
    index = fixtures.patient_index()
    differing: list[str] = []
    names = [n for n in fixtures.patient_names() if not only or n in only]
    started = time.monotonic()
    echo(f"lupus-cds demo: {len(names)} patients x {len(fixtures.HOOKS)} hooks, evaluated as of "
         f"{fixtures.ANCHOR_TEXT} (the fixtures' anchor date)\n")
    for number, name in enumerate(names, 1):
        info = index.get(name, {})
        echo(f"[{number}/{len(names)}] {name}: {info.get('title', '')}")
        for hook in fixtures.HOOKS:
            cards = evaluate(client, name, hook)
            path = fixtures.expected_path(name, hook)
            expected = json.loads(path.read_text())["cards"] if path.exists() else None
            status = ""
            if cards != expected:
                differing.append(f"{name}/{hook}")
                if update:
                    fixtures.write_expected(name, hook, [_as_card(c) for c in cards])
                    status = "  (golden file updated)"
                else:
                    status = "  DIFFERS from " + str(path.relative_to(fixtures.fixtures_dir().parent))
            echo(f"  {hook}{status}")
            for line in format_cards(cards):
                echo(line)
            if expected is not None and cards != expected and not update:
                echo("    expected:")
                for line in format_cards(expected):
                    echo("    " + line)
        echo("")
    elapsed = time.monotonic() - started
    total = len(names) * len(fixtures.HOOKS)
    if differing and not update:
        echo(f"{len(differing)} of {total} requests differ from their golden files ({elapsed:.1f} s): "
             + ", ".join(differing))
        echo("Review the cards above; `lupus-cds demo --update` rewrites the golden files.")
    elif differing:
        echo(f"{len(differing)} golden files rewritten ({elapsed:.1f} s).")
    else:
        echo(f"All {total} requests give their golden cards ({elapsed:.1f} s).")
    return differing


def _as_card(digest: dict[str, str]) -> dict[str, Any]:
    """A digest back in card shape, for :func:`fixtures.write_expected`."""
    return {"summary": digest["summary"], "indicator": digest["indicator"],
            "source": {"topic": {"code": digest["topic"]}}}


@click.command("demo")
@click.option("--update", is_flag=True, help="Rewrite the golden files with the cards the service gives now.")
@click.argument("patients", nargs=-1)
def demo_command(update: bool, patients: tuple[str, ...]) -> None:
    """Show the cards of every fixture patient (or only PATIENTS) and check them against the golden files."""
    try:
        known = fixtures.patient_names()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    unknown = sorted(set(patients) - set(known))
    if unknown:
        raise click.ClickException(f"unknown fixture patient(s): {', '.join(unknown)}; known: {', '.join(known)}")
    differing = run_all(update=update, only=patients)
    if differing and not update:
        sys.exit(1)
