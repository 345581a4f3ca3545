"""The contract between the protocol layer and clinical plugins (pluggy hook specifications).

A plugin is a module (or object) with functions marked ``@hookimpl``, registered through the
``cds_hooks`` entry-point group in its ``pyproject.toml``::

    [project.entry-points.cds_hooks]
    myplugin = "myplugin.hooks"

The protocol layer never imports a plugin by name: everything clinical arrives through these hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import pluggy

from .apps import SmartAppDefinition
from .models import ServiceDefinition

PROJECT = "cds_hooks"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cds_services(config: Mapping[str, Any]) -> list[ServiceDefinition]:
    """Declare the CDS services this plugin provides.

    Called once when the app is created; the result feeds both discovery and dispatch.

    :param config: the application's settings (read-only), for the plugin's own switches.
    :return: the plugin's service definitions (ids must be unique per hook across all plugins).
    """


@hookspec
def cds_cli_commands(cli: click.Group) -> None:
    """Add plugin-specific commands to the ``lupus-cds`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(...)``.
    """


@hookspec
def cds_sample_request_dirs() -> list[str]:
    """Folders of sample hook requests (``*.json``) the CLI and sandbox can offer to users.

    :return: absolute paths.
    """


@hookspec
def cds_smart_apps(config: Mapping[str, Any]) -> list[SmartAppDefinition]:
    """Declare the SMART on FHIR apps this plugin serves (opened from cards by ``smart`` links).

    Called once when the app is created, and only when ``LUPUS_CDS_SMART_APP`` is on; the host runs the
    launch, keeps the tokens and reads the FHIR data, the plugin renders the page from the resources.

    :param config: the application's settings (read-only).
    :return: the plugin's app definitions (ids unique across all plugins).
    """
