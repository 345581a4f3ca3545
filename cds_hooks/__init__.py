"""lupus-cds protocol layer: a generic, conformant CDS Hooks 2.0.1 service host.

It knows CDS Hooks, FHIR data access and security; the clinical content arrives as plugins
(:mod:`cds_hooks.hookspecs`).
"""

from .app import create_app
from .hookspecs import hookimpl
from .models import HookRequest, PrefetchEntry, PrefetchStatus, PrefetchView, ServiceDefinition

__all__ = [
    "HookRequest",
    "PrefetchEntry",
    "PrefetchStatus",
    "PrefetchView",
    "ServiceDefinition",
    "create_app",
    "hookimpl",
]
