"""The plugin's pluggy hook implementations: three CDS services (patient-view, order-select, order-sign)
answered by one handler, the ``lupus-cds rules`` command, and the sample-request folder.

Prefetch templates (CDS Hooks 2.0.1 PF-3/4/6): only ``{{context.patientId}}``; type-level searches with
``patient=``, token ``code=`` as a comma-OR of ``system|code`` built from the value sets, ``status``,
``_sort`` and ``_count``. No dates: look-back windows are applied in the service (section 7, pitfall 14).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from cds_hooks.hookspecs import hookimpl
from cds_hooks.models import HookRequest, ServiceDefinition

from . import terminology
from .cards import build_cards
from .facts import SYMPTOM_VALUESETS, VS, build_facts
from .rules import evaluate, evaluate_gate
from .settings import settings_for

SERVICE_PREFIX = "lupus-fasciculation"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
#: keep every template under this many characters (some EHRs and proxies cap URL length)
MAX_TEMPLATE_LENGTH = 2000

PATIENT_PARAM = "patient={{context.patientId}}"
#: prefetch keys the service cannot answer without (412 if missing and not fetchable)
REQUIRED_PREFETCH = frozenset({"patient", "conditions"})

TITLES = {
    "patient-view": "SLE with muscle twitching: chart review",
    "order-select": "SLE with muscle twitching: advice while ordering",
    "order-sign": "SLE with muscle twitching: advice before signing",
}
DESCRIPTIONS = {
    "patient-view": (
        "For a patient with systemic lupus erythematosus (SLE) and recent muscle twitching (fasciculations): "
        "suggests creatine kinase to screen for lupus myositis, potassium and magnesium, a corticosteroid "
        "dose review, urgent evaluation of red flags (weakness, loss of sensation, trouble swallowing, "
        "slurred speech or breathlessness) and nerve conduction studies / EMG for neuropathic symptoms."
    ),
    "order-select": (
        "The SLE + muscle twitching advice while orders are being selected; tests already in the draft "
        "orders are not suggested again, and a corticosteroid being ordered is reviewed."
    ),
    "order-sign": (
        "The SLE + muscle twitching advice before orders are signed; tests already in the draft orders are "
        "not suggested again, and a corticosteroid being signed is reviewed."
    ),
}
USAGE = (
    "Reads Conditions, lab and symptom Observations, medication orders, lists and administrations, lab "
    "orders and NCS/EMG procedures of the patient; applies look-back windows itself."
)


# ------------------------------------------------------------------------------------------ prefetch


def _pairs(entries: Iterable[Any]) -> list[tuple[str, str]]:
    """(system, code) pairs from terminology.codes(), whatever shape its items have."""
    out = []
    # codes() is a set: sort so templates and order codes are the same in every process
    for item in sorted(entries, key=repr):
        if isinstance(item, Mapping):
            system, code = item.get("system"), item.get("code")
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            system, code = item[0], item[1]
        else:
            system, code = getattr(item, "system", None), getattr(item, "code", None)
        if isinstance(system, str) and isinstance(code, str) and "*" not in code:
            out.append((system, code.strip()))
    return out


def code_param(valuesets: Iterable[str], systems: Iterable[str], exclude: Iterable[str] = ()) -> str:
    """``system|code,system|code`` for every code of ``valuesets`` in ``systems`` (minus the codes of the
    ``exclude`` value sets), in a stable order."""
    wanted = tuple(systems)
    excluded = {pair for name in exclude for pair in _pairs(terminology.codes(name))}
    seen: dict[tuple[str, str], None] = {}
    for name in valuesets:
        for pair in _pairs(terminology.codes(name)):
            if pair[0] in wanted and pair not in excluded:
                seen.setdefault(pair, None)
    return ",".join(f"{system}|{code}" for system, code in seen)


def observation_search(codes: str, count: int) -> str:
    return f"Observation?{PATIENT_PARAM}&code={codes}&_sort=-date&_count={count}"


def prefetch_templates() -> dict[str, str]:
    """key -> template. Observations are split by analyte group so that one frequent test (say daily
    creatinine) cannot push the others off the first page."""
    patient = PATIENT_PARAM
    symptom_sets = [VS.SYMPTOM_OBSERVATION_CODE, *SYMPTOM_VALUESETS]  # what the facts read, no more
    order_sets = [VS.CK_ORDER, VS.POTASSIUM_ORDER, VS.MAGNESIUM_ORDER, VS.CREATININE, VS.NCS_EMG, VS.ALBUMIN,
                  VS.TSH_ORDER, VS.PTH_ORDER, VS.VITAMIN_D_ORDER]
    templates = {
        "patient": "Patient/{{context.patientId}}",
        # all Conditions: few per patient, every rule reads them, and a code list would exceed the URL limit
        "conditions": f"Condition?{patient}&_count=500",
        "ck": observation_search(code_param([VS.CK_TOTAL], [LOINC]), 20),
        "potassium": observation_search(code_param([VS.POTASSIUM], [LOINC], [VS.POTASSIUM_EXCLUDE]), 20),
        "magnesium": observation_search(code_param([VS.MAGNESIUM], [LOINC], [VS.MAGNESIUM_EXCLUDE]), 20),
        "otherElectrolytes": observation_search(
            code_param([VS.CALCIUM, VS.CALCIUM_IONIZED, VS.PHOSPHATE, VS.SODIUM], [LOINC]), 30
        ),
        # albumin corrects a same-day total calcium (10.2): its own key, so frequent albumins cannot push the
        # calcium off the first page of otherElectrolytes
        "albumin": observation_search(code_param([VS.ALBUMIN], [LOINC]), 10),
        "renal": observation_search(code_param([VS.CREATININE, VS.EGFR], [LOINC]), 20),
        # a child's steroid dose per kg needs only the newest weight
        "bodyWeight": observation_search(code_param([VS.BODY_WEIGHT], [LOINC]), 5),
        "symptomObservations": observation_search(code_param(symptom_sets, [LOINC, SNOMED]), 50),
        "medicationRequests": f"MedicationRequest?{patient}&status=active,on-hold,completed&_count=200",
        "medicationStatements": f"MedicationStatement?{patient}&status=active,intended,on-hold,completed"
        "&_count=200",
        # in hospital a pulse may exist only as administrations: the newest first (no relative dates in
        # a template; the service keeps the pulse look-back itself)
        "medicationAdministrations": f"MedicationAdministration?{patient}&status=completed,in-progress"
        "&_sort=-effective-time&_count=100",
        "serviceRequests": f"ServiceRequest?{patient}&status=draft,active,on-hold,completed"
        f"&code={code_param(order_sets, [LOINC, CPT, SNOMED])}&_count=50",
        "procedures": f"Procedure?{patient}&code={code_param([VS.NCS_EMG], [CPT, SNOMED, LOINC])}"
        "&_sort=-date&_count=20",
    }
    # a value set with no codes in the wanted systems would leave "code=" empty: drop the filter instead
    return {key: template.replace("&code=&", "&") for key, template in templates.items()}


# ------------------------------------------------------------------------------------------- handler


def advise(request: HookRequest) -> list[dict[str, Any]]:
    """The handler of all three services: facts -> rules -> cards (``[]`` when there is no guidance)."""
    settings = settings_for(request.config)
    facts = build_facts(request, gate=lambda known: evaluate_gate(known, settings).open)
    gate, findings = evaluate(facts, settings)
    if not findings:
        return []
    return build_cards(findings, gate, facts, settings)


@hookimpl
def cds_services(config: Mapping[str, Any]) -> list[ServiceDefinition]:
    settings_for(config)  # fail at start-up, not on the first patient, when a threshold is mis-typed
    templates = prefetch_templates()
    too_long = [key for key, template in templates.items() if len(template) > MAX_TEMPLATE_LENGTH]
    if too_long:
        raise ValueError(f"prefetch templates longer than {MAX_TEMPLATE_LENGTH} characters: {too_long}")
    return [
        ServiceDefinition(
            id=f"{SERVICE_PREFIX}-{hook}",
            hook=hook,
            title=TITLES[hook],
            description=DESCRIPTIONS[hook],
            handler=advise,
            prefetch=templates,
            required_prefetch=REQUIRED_PREFETCH,
            usage_requirements=USAGE,
        )
        for hook in ("patient-view", "order-select", "order-sign")
    ]


@hookimpl
def cds_cli_commands(cli: click.Group) -> None:
    from .demo import demo_command
    from .rulebook import rules_command
    from .sandbox import sandbox_command

    cli.add_command(rules_command)
    cli.add_command(demo_command)
    cli.add_command(sandbox_command)


@hookimpl
def cds_sample_request_dirs() -> list[str]:
    # one folder per fixture patient, each holding that patient's requests (fixtures/README.md)
    folder = Path(__file__).resolve().parent.parent / "fixtures" / "requests"
    return sorted(str(sub) for sub in folder.iterdir() if sub.is_dir()) if folder.is_dir() else []
