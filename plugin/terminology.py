"""Code membership for the clinical rules: loads the FHIR ValueSets in ``plugin/valuesets/`` once,
normalises codes the way real feeds need (CLINICAL-CONTENT section 0), and answers "is this coding in
value set X" in constant time.

Normalisation: trim whitespace (an HL7 example ships ``" 313822004"``); accept the OID aliases of
SNOMED, ICD-10-CM, WHO ICD-10, LOINC, RxNorm and CPT, trailing slashes and SNOMED edition/version URIs;
upper-case ICD-10 codes and insert the dot after the third character (``M3214`` -> ``M32.14``); ignore
``display``.

WHO ICD-10 (``http://hl7.org/fhir/sid/icd-10``) is a different code system and stays one: a WHO coding
is never looked up as ICD-10-CM. Where a three/four-character WHO code means the same as the ICD-10-CM
code (M32.1, M32.8, M32.9, R25.3, L93.x), the ValueSet lists it in its own WHO include, so membership
is a decision written in the ValueSet, not a side effect of normalisation.

Prefix entries (an include carrying the ``code-prefix`` extension) match every code starting with the
prefix, for ICD-10-CM families that were split over the years (M79.1 -> M79.10..M79.18).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
#: local code system of ingredient names, for a drug-class member with no verified RxNorm code (voclosporin):
#: matched against the ingredient name read from a product name or text
INGREDIENT_NAME = "https://lupus-cds.example.org/fhir/CodeSystem/ingredient-name"

PREFIX_EXTENSION = "https://lupus-cds.example.org/fhir/StructureDefinition/code-prefix"
#: an include-level label naming the group its codes belong to (cardiopulmonary-causes: 'heart failure', ...)
GROUP_EXTENSION = "https://lupus-cds.example.org/fhir/StructureDefinition/code-group"
VALUESET_DIR = Path(__file__).resolve().parent / "valuesets"

_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10_WHO,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.12": CPT,
}
_CANONICAL = {uri.lower(): uri for uri in (SNOMED, ICD10CM, ICD10_WHO, LOINC, RXNORM, CPT)}
_ICD10_SYSTEMS = (ICD10CM, ICD10_WHO)


def normalize_system(system: Any) -> str | None:
    """The canonical URI of ``system`` (OID aliases, trailing slash, whitespace), or ``None`` (also for a
    value that is not a string: raw JSON may hold a list or an object here)."""
    return _normalize_system(system) if isinstance(system, str) else None


@functools.lru_cache(maxsize=256)
def _normalize_system(system: str) -> str | None:
    system = system.strip().rstrip("/")
    if not system:
        return None
    lowered = system.lower()
    if lowered.startswith(("http://snomed.info/sct/", "https://snomed.info/sct")):
        return SNOMED  # edition/version URIs (US edition 731000124108 ...) are still SNOMED CT
    # scheme and host are case-insensitive, and the OIDs are digits: compare lower-cased
    return _ALIASES.get(lowered) or _CANONICAL.get(lowered) or system


def normalize_code(system: Any, code: Any) -> str | None:
    """``code`` trimmed; ICD-10(-CM) upper-cased with its dot after the third character. ``None`` for a
    code that is not a string (or is blank)."""
    if not isinstance(code, str):
        return None
    return _normalize_code(system if isinstance(system, str) else None, code)


@functools.lru_cache(maxsize=65536)
def _normalize_code(system: str | None, code: str) -> str | None:
    code = code.strip()
    if not code:
        return None
    if normalize_system(system) in _ICD10_SYSTEMS:
        code = code.upper().replace(" ", "").rstrip(".")
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return code


class _Compiled:
    """One ValueSet, compiled for lookups."""

    __slots__ = ("codes", "prefixes", "groups")

    def __init__(self, document: dict[str, Any]):
        codes: set[tuple[str, str]] = set()
        prefixes: dict[str, list[str]] = {}
        #: (system, code or prefix, is prefix, group) for includes carrying a code-group extension
        groups: list[tuple[str | None, str | None, bool, str]] = []
        for include in document.get("compose", {}).get("include", []):
            system = normalize_system(include.get("system"))
            extensions = include.get("extension", [])
            group = next((e["valueString"] for e in extensions if e.get("url") == GROUP_EXTENSION), None)
            for extension in extensions:
                if extension.get("url") == PREFIX_EXTENSION:
                    prefix = normalize_code(system, extension["valueString"])
                    prefixes.setdefault(system, []).append(prefix)
                    if group:
                        groups.append((system, prefix, True, group))
            for concept in include.get("concept", []):
                code = normalize_code(system, concept["code"])
                codes.add((system, code))
                if group:
                    groups.append((system, code, False, group))
        self.codes = frozenset(codes)
        self.prefixes = {system: tuple(p) for system, p in prefixes.items()}
        self.groups = tuple(groups)

    def contains(self, system: str | None, code: str | None) -> bool:
        if (system, code) in self.codes:
            return True
        prefixes = self.prefixes.get(system)
        return bool(prefixes) and isinstance(code, str) and code.startswith(prefixes)


@functools.cache
def all_valuesets() -> dict[str, dict[str, Any]]:
    """Every ValueSet document, by id (read once)."""
    documents = {}
    for path in sorted(VALUESET_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        documents[document["id"]] = document
    return documents


@functools.cache
def _compiled(name: str) -> _Compiled:
    try:
        return _Compiled(all_valuesets()[name])
    except KeyError:
        raise KeyError(f"no ValueSet {name!r} in {VALUESET_DIR}") from None


def valueset(name: str) -> dict[str, Any]:
    """The ValueSet document ``name`` (its id)."""
    return all_valuesets()[name]


def codes(name: str) -> frozenset[tuple[str, str]]:
    """The enumerated ``(system, code)`` pairs of ``name`` (prefix entries are not enumerable)."""
    return _compiled(name).codes


def prefixes(name: str) -> dict[str, tuple[str, ...]]:
    """system -> code prefixes of ``name``."""
    return dict(_compiled(name).prefixes)


def in_valueset(name: str, system: Any, code: Any) -> bool:
    """Is ``system|code`` (raw, un-normalised) a member of ValueSet ``name``?"""
    system = normalize_system(system)
    return _compiled(name).contains(system, normalize_code(system, code))


def group_of(name: str, system: Any, code: Any) -> str | None:
    """The code-group label of the include holding ``system|code`` in ValueSet ``name`` (``None`` if none)."""
    system = normalize_system(system)
    code = normalize_code(system, code)
    if code is None:
        return None
    groups = _compiled(name).groups
    exact = next((g for s, c, is_prefix, g in groups if not is_prefix and s == system and c == code), None)
    if exact is not None:
        return exact
    return next((g for s, c, is_prefix, g in groups if is_prefix and s == system and code.startswith(c or "")), None)


def _codings(concept: Any) -> Iterable[dict[str, Any]]:
    """The codings of a raw CodeableConcept, tolerating a single Coding or junk."""
    if isinstance(concept, list):  # an array of CodeableConcepts where one was expected
        for item in concept:
            yield from _codings(item)
        return
    if not isinstance(concept, dict):
        return
    codings = concept.get("coding")
    if isinstance(codings, dict):
        codings = [codings]
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, dict):
                yield coding
    elif "code" in concept and "system" in concept:  # a bare Coding where a CodeableConcept belongs
        yield concept


def matching_coding(name: str, codeable_concept: Any) -> tuple[str, str, str | None] | None:
    """``(system, code, display)`` of the first coding in ``name``, normalised, for card evidence."""
    for coding in _codings(codeable_concept):
        system = normalize_system(coding.get("system"))
        code = normalize_code(system, coding.get("code"))
        if code is not None and _compiled(name).contains(system, code):
            display = coding.get("display")
            return system, code, display if isinstance(display, str) else None
    return None


def concept_in(name: str, codeable_concept: Any) -> bool:
    """Does any coding of a raw CodeableConcept belong to ValueSet ``name``?"""
    return matching_coding(name, codeable_concept) is not None


@functools.cache
def _displays(name: str) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for include in all_valuesets()[name].get("compose", {}).get("include", []):
        system = normalize_system(include.get("system"))
        for concept in include.get("concept", []):
            if isinstance(concept.get("display"), str) and system is not None:
                found[(system, normalize_code(system, concept["code"]))] = concept["display"]
    return found


def concept_display(name: str, system: Any, code: Any) -> str | None:
    """The display ValueSet ``name`` records for ``system|code`` (the source's display, not the record's)."""
    system = normalize_system(system)
    return _displays(name).get((system, normalize_code(system, code)))
