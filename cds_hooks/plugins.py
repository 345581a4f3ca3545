"""Builds the pluggy plugin manager: the clinical plugins arrive through the ``cds_hooks`` entry-point
group, or explicitly (tests pass ``plugins=[...]`` to ``create_app``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .hooks import hook_definition
from .models import ServiceDefinition
from .prefetch import check_template


def plugin_manager(plugins: Iterable[Any] | None = None) -> pluggy.PluginManager:
    """A manager with the hookspecs; ``plugins`` if given, else every installed entry point."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if plugins is None:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    else:
        for plugin in plugins:
            pm.register(plugin)
    pm.check_pending()
    return pm


def collect_services(pm: pluggy.PluginManager, config: Mapping[str, Any]) -> dict[tuple[str, str], ServiceDefinition]:
    """Every service of every plugin, keyed by ``(id, hook)`` (one id may serve several hooks: DISC-8).

    :raises ValueError: duplicate ``(id, hook)``, an id unusable in a URL, or a template outside PF-3/4.
    """
    services: dict[tuple[str, str], ServiceDefinition] = {}
    for batch in pm.hook.cds_services(config=config):
        for service in batch or ():
            if not service.id or "/" in service.id or service.id == "feedback":
                raise ValueError(f"service id {service.id!r} cannot be used in a URL")
            if not service.description:
                raise ValueError(f"service {service.id!r} needs a description (DISC-4)")
            key = (service.id, service.hook)
            if key in services:
                raise ValueError(f"two services declare id {service.id!r} for hook {service.hook!r}")
            if hook_definition(service.hook) is None and not service.hook:
                raise ValueError(f"service {service.id!r} declares no hook")
            for name, template in service.prefetch.items():
                check_template(service.hook, name, template)
            unknown = (service.required_prefetch or frozenset()) - set(service.prefetch)
            if unknown:
                raise ValueError(f"service {service.id!r} requires undeclared prefetch keys {sorted(unknown)}")
            services[key] = service
    return services
