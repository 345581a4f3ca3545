"""The rule book a clinician reviews: for each rule, When/Then in plain words, the settings that hold its
thresholds, the value sets it reads and its evidence. ``lupus-cds rules`` prints it with the thresholds
in force and each value set's title and code count.

The rules themselves are the functions of :mod:`plugin.rules` with the same ids; the card wording is in
:mod:`plugin.cards`. Keep the three in step: a test checks that every rule here has a function there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click

from .cards import LINKS
from .settings import SETTINGS, Settings, settings_for


@dataclass(frozen=True)
class RuleSpec:
    id: str
    title: str
    when: tuple[str, ...]
    then: tuple[str, ...]
    settings: tuple[str, ...]
    valuesets: tuple[str, ...]
    evidence: tuple[str, ...]
    links: tuple[str, ...] = ()


RULEBOOK: tuple[RuleSpec, ...] = (
    RuleSpec(
        id="gate",
        title="Shared gates (every card)",
        when=(
            "An SLE Condition: clinicalStatus active, recurrence, relapse (or remission, switch), "
            "verificationStatus not refuted / entered-in-error (unconfirmed, provisional, differential "
            "only "
            "with the switch); a cutaneous or non-SLE lupus code on the same Condition wins over the "
            "parent "
            "'lupus erythematosus' code.",
            "AND a fasciculation finding, not negated: a Condition (active, not refuted) with onset or "
            "recorded date within the Condition window, or an Observation (final, amended, corrected or "
            "preliminary; code = the finding, or LOINC 75325-1 'Symptom' with the finding as value) within "
            "the Observation window.",
        ),
        then=("Evaluate the rules below; otherwise no cards.",),
        settings=(
            "count_drug_induced_lupus",
            "count_unspecified_lupus",
            "count_unconfirmed_sle",
            "count_sle_in_remission",
            "fasciculation_condition_days",
            "fasciculation_observation_days",
        ),
        valuesets=(
            "sle",
            "sle-unspecified-lupus",
            "sle-drug-induced",
            "lupus-exclusions",
            "fasciculation",
            "symptom-observation-code",
        ),
        evidence=("CLINICAL-CONTENT 1.1-1.2 and 5.0; Synthea codes lupus as 200936003.",),
    ),
    RuleSpec(
        id="red-flag",
        title="Red flags: urgent evaluation (critical)",
        when=(
            "Weakness, loss of sensation (R20.0/R20.1, hypoesthesia), dysphagia or dyspnea / respiratory "
            "distress recorded or observed within the red-flag window, not negated.",
        ),
        then=(
            "Critical card: urgent neurologic evaluation; for dyspnea assess respiratory muscle strength "
            "(FVC/NIF). No automatic orders; differentials listed (lupus myositis, neuropathy, severe "
            "hypokalaemia, motor neuron disease, myasthenia).",
        ),
        settings=("red_flag_days", "escalation_url"),
        valuesets=("muscle-weakness", "loss-of-sensation", "dysphagia", "dyspnea"),
        evidence=(
            "Source article red-flag list (twitching with weakness, loss of sensation, trouble "
            "swallowing or breathing).",
        ),
        links=("eular-sle-2023",),
    ),
    RuleSpec(
        id="ck",
        title="Creatine kinase: screen for lupus myositis",
        when=(
            "No final total-CK result within the lab window and no CK order pending (draftOrders, or an "
            "active/draft/on-hold ServiceRequest authored within the lab window); CK-MB does not count.",
            "OR the latest final CK within the window is above the limit: the lab's flag first (H, HH, HU: "
            "elevated even below the default ULN; N, L: not), else above the lab's reference range high, else "
            "above the default for the patient's sex (unknown sex: the lower limit). ukat/L is converted x60.",
            "OR the latest final CK has no unit that can be read (no unit, and its magnitude fits neither U/L "
            "nor ukat/L unambiguously).",
        ),
        then=(
            "No CK: info card with a draft CK order (warning if weakness or myalgia is also recorded; "
            "'monitor' wording if myositis is known; 'repeat' wording if an older CK exists).",
            "CK above the limit and below the marked multiple: warning 'possible lupus myositis' with draft "
            "orders for a repeat CK in 48-72 h (no strenuous exercise or IM injections before) and a TSH "
            "(unless pending); the detail adds a myositis work-up by rheumatology if CK stays high.",
            ">= marked multiple (or flagged HH): also suggests creatinine (if none within the creatinine window) "
            "and urinalysis; >= critical multiple: critical 'possible rhabdomyolysis'.",
            "A current statin, hydroxychloroquine/chloroquine or colchicine (toxic myopathy) is named in the "
            "summary: 'drug myopathy or lupus myositis?'.",
            "CK unreadable: info card 'not interpretable, check the lab report'; never graded, never critical.",
            "CK within the limit: no CK card; the value is shown in the other cards.",
        ),
        settings=(
            "lab_window_days",
            "ck_uln_male",
            "ck_uln_female",
            "ck_uln_unknown_sex",
            "ck_marked_multiple",
            "ck_critical_multiple",
            "rhabdo_creatinine_days",
        ),
        valuesets=(
            "ck-total",
            "ck-mb",
            "ck-order-codes",
            "tsh-order-codes",
            "myositis",
            "muscle-weakness",
            "myalgia",
            "creatinine",
            "myotoxic-drugs",
        ),
        evidence=(
            "EULAR/ACR 2017 IIM criteria (CK above ULN is a criterion item).",
            "Statins, hydroxychloroquine and colchicine cause toxic (neuro)myopathy (CPIC drug table; "
            "plugin/valuesets/myotoxic-drugs.json).",
            "Rhabdomyolysis: CK > 5x ULN (RCEM / StatPearls); 10x ULN stricter threshold.",
            "Mayo CK reference ranges; exercise and IM injections raise CK for days, hypothyroidism raises CK.",
        ),
        links=("eular-acr-2017", "mayo-ck", "statpearls-rhabdo"),
    ),
    RuleSpec(
        id="electrolytes",
        title="Potassium and magnesium; calcium, phosphate and sodium",
        when=(
            "Every result is read the same way (plugin/labs.py): a result with no readable unit is not "
            "interpretable (never critical); else the lab's flag (H, HH, HU, L, LL, LU, A, AA, N) first, else the "
            "lab's reference range, else the default cut-off; LL/HH/AA or a critical cut-off is critical.",
            "Potassium (serum/plasma/blood codes; RBC and mass-unit codes excluded): low below the default, high "
            "at or above it; a haemolysed specimen (Specimen.condition HEM or text, interpretation, or a note "
            "saying haemolysed) is not a valid potassium.",
            "Magnesium (mg/dL, mmol/L or mEq/L; RBC excluded) low; total calcium low after correction for a "
            "same-day albumin (Ca + 0.8 x (4.0 - albumin g/dL)), ionized calcium low; phosphate or sodium low.",
            "OR no usable potassium or magnesium result within the lab window (checked separately: BMP/CMP have "
            "no magnesium) and none pending.",
        ),
        then=(
            "Abnormal: one 'abnormal electrolytes' card. Critical: potassium critically low or high, magnesium "
            "or calcium critically low. Warning: low or high potassium, low magnesium, low calcium (possible "
            "tetany with twitching). Info: low phosphate or sodium (warning when severe).",
            "Draft orders: recheck what is abnormal, redraw a haemolysed potassium, order what is missing; with "
            "low calcium: albumin (if none that day), magnesium (if none), PTH and 25-OH vitamin D.",
            "A high potassium names the usual causes in SLE: lupus nephritis / CKD, ACE inhibitors or ARBs, "
            "calcineurin inhibitors, trimethoprim (those on record are listed).",
            "Medicines listed with what they do: loop and thiazide diuretics lower K and Mg; PPIs lower Mg; "
            "calcineurin inhibitors lower Mg, RAISE K and cause tremor; fludrocortisone/hydrocortisone lower K.",
            "Missing or unusable only: one 'electrolyte testing' card with one draft order per test (info; "
            "warning with a K/Mg-lowering medicine or kidney involvement: lupus nephritis or CKD code, eGFR below "
            "the threshold). The FDA PPI notice is linked only when a PPI is current.",
        ),
        settings=(
            "lab_window_days",
            "hypokalemia_mmol_l",
            "hypokalemia_critical_mmol_l",
            "hyperkalemia_mmol_l",
            "hyperkalemia_critical_mmol_l",
            "hypomagnesemia_mg_dl",
            "hypomagnesemia_critical_mg_dl",
            "hypocalcemia_mg_dl",
            "hypocalcemia_critical_mg_dl",
            "ionized_hypocalcemia_mmol_l",
            "ionized_hypocalcemia_critical_mmol_l",
            "hypophosphatemia_mg_dl",
            "hypophosphatemia_critical_mg_dl",
            "hyponatremia_mmol_l",
            "hyponatremia_critical_mmol_l",
            "egfr_renal_threshold",
            "renal_lab_days",
            "ppi_long_term_days",
        ),
        valuesets=(
            "potassium",
            "potassium-exclude",
            "magnesium",
            "magnesium-exclude",
            "potassium-order-codes",
            "magnesium-order-codes",
            "calcium",
            "calcium-ionized",
            "albumin",
            "pth-order-codes",
            "vitamin-d-order-codes",
            "phosphate",
            "sodium",
            "egfr",
            "sle-renal",
            "ckd",
            "loop-diuretics",
            "thiazides",
            "ppis",
            "calcineurin-inhibitors",
            "potassium-raising-drugs",
        ),
        evidence=(
            "StatPearls hypokalaemia (< 3.5 mmol/L; severe < 2.5): weakness and cramps.",
            "Hypomagnesaemia < 1.7 mg/dL = 0.70 mmol/L (StatPearls uses 1.46 mg/dL); lab flag first.",
            "UK Kidney Association 2023 acute hyperkalaemia guideline (>= 5.5 mmol/L; ECG from 6.0).",
            "StatPearls hypocalcaemia (8.5-10.5 mg/dL; 0.8 mg/dL per g/dL albumin; PTH, vitamin D, magnesium).",
            "Each default cut-off's source is printed with its setting below.",
            "Calcineurin inhibitors: hyperkalaemia, hypomagnesaemia, tremor (Farouk SS et al., Adv Chronic Kidney "
            "Dis 2020;27:56-66, doi:10.1053/j.ackd.2019.08.006).",
            "FDA 2011 drug safety communication: PPIs and hypomagnesaemia.",
        ),
        links=(
            "statpearls-hypokalemia",
            "statpearls-hypomagnesemia",
            "statpearls-hypocalcemia",
            "ukka-hyperkalaemia",
            "fda-ppi-2011",
        ),
    ),
    RuleSpec(
        id="steroid",
        title="Corticosteroid dose review",
        when=(
            "A current systemic corticosteroid (oral/IV/IM; topical, inhaled, nasal, ophthalmic, otic "
            "excluded), including one in draftOrders being signed; prednisone-equivalent computed from the "
            "structured dose (strength x count, frequency / period, taper step in force).",
            "OR a single administration >= the pulse dose whose course ended within the pulse look-back.",
        ),
        then=(
            "Pulse, very high (> very-high limit) or high (> high limit): warning.",
            "Medium (> low band, <= high limit): info, above the SLE maintenance target.",
            "Dose not computable: info 'review dose'. Low band: no card (info above target with the switch).",
            "Never an action that changes a medication. A current anticonvulsant is added to this card.",
        ),
        settings=(
            "steroid_target_mg",
            "steroid_low_max_mg",
            "steroid_high_above_mg",
            "steroid_very_high_above_mg",
            "steroid_pulse_mg",
            "steroid_card_above_target",
            "pulse_lookback_days",
        ),
        valuesets=("systemic-corticosteroids", "anticonvulsants-neuropathic"),
        evidence=(
            "Buttgereit 2002 EULAR dose nomenclature (low <= 7.5, medium <= 30, high <= 100, very "
            "high, "
            "pulse >= 250 mg).",
            "EULAR 2023 SLE: maintenance <= 5 mg/day; IV methylprednisolone pulses 250-1000 mg.",
            "Steroid myopathy typical at 40-60 mg/day, usually with a normal CK (Medscape, StatPearls).",
        ),
        links=("buttgereit-2002", "eular-sle-2023", "medscape-steroid-myopathy"),
    ),
    RuleSpec(
        id="neuroactive",
        title="Neuro-active medication review",
        when=("A current anticonvulsant or gabapentinoid and no steroid card.",),
        then=(
            "Info card: tremor / myoclonus can look like twitching; carbamazepine and oxcarbazepine lower "
            "sodium.",
        ),
        settings=(),
        valuesets=("anticonvulsants-neuropathic",),
        evidence=("CLINICAL-CONTENT 3.1 and 5.3.",),
    ),
    RuleSpec(
        id="ncs-emg",
        title="Nerve conduction study / EMG",
        when=(
            "Numbness, tingling, paresthesia or neuropathic pain (symptom windows), or an active "
            "neuropathy "
            "diagnosis; OR weakness with a normal CK within the lab window.",
            "AND no NCS/EMG Procedure or order within the look-back, none in draftOrders.",
        ),
        then=("Info card with a draft NCS/EMG order.",),
        settings=("ncs_lookback_days", "fasciculation_condition_days", "fasciculation_observation_days"),
        valuesets=(
            "sensory-symptoms",
            "loss-of-sensation",
            "peripheral-neuropathy",
            "muscle-weakness",
            "ncs-emg-codes",
        ),
        evidence=(
            "Peripheral neuropathy in up to 27% of SLE (source article); EMG separates neuropathy, "
            "myopathy and benign fasciculation.",
        ),
        links=("eular-sle-2023",),
    ),
)


def _valueset_summary(name: str) -> str:
    """'id: title (n codes)', tolerating a terminology module that is not loaded."""
    try:
        from . import terminology

        vs = terminology.valueset(name)
        title = vs.get("title") if isinstance(vs, Mapping) else getattr(vs, "title", None)
        count = len(list(terminology.codes(name)))
        return f"{name}: {title or '(untitled)'} ({count} codes)"
    except Exception as exc:  # the rule book must print even when one value set is broken
        return f"{name}: NOT AVAILABLE ({type(exc).__name__}: {exc})"


def _setting_line(name: str, settings: Settings) -> str:
    spec = SETTINGS[name]
    value: Any = getattr(settings, name)
    shown = (
        "(none)"
        if value == ""
        else str(value).lower()
        if isinstance(value, bool)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
    source = f" Source: {spec.source}." if spec.source else ""
    return f"{spec.key} = {shown}: {spec.description}{source}"


def format_rulebook(config: Mapping[str, Any] | None = None) -> str:
    """The whole rule book as plain text, with the thresholds in force for ``config``."""
    settings = settings_for(config)
    out: list[str] = []
    for rule in RULEBOOK:
        out.append(f"== {rule.id}: {rule.title}")
        out.append("When:")
        out.extend(f"  - {line}" for line in rule.when)
        out.append("Then:")
        out.extend(f"  - {line}" for line in rule.then)
        if rule.settings:
            out.append("Thresholds and switches:")
            out.extend(f"  - {_setting_line(name, settings)}" for name in rule.settings)
        out.append("Value sets:")
        out.extend(f"  - {_valueset_summary(name)}" for name in rule.valuesets)
        out.append("Evidence:")
        out.extend(f"  - {line}" for line in rule.evidence)
        out.extend(f"  - {LINKS[name].label} <{LINKS[name].url}>" for name in rule.links)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


@click.command("rules")
def rules_command() -> None:
    """Print the clinical rule book: each rule's When/Then, thresholds, value sets and evidence."""
    from cds_hooks.config import load

    click.echo(format_rulebook(load()), nl=False)
