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
            "only with the switch); a cutaneous or non-SLE lupus code on the same Condition wins over the "
            "parent 'lupus erythematosus' code.",
            "SLE codes: ICD-10-CM M32 (header), M32.1x, M32.8, M32.9 and the SNOMED codes of the published GM-SDE "
            "SLE codelist (derived from OpenSAFELY's), curated code by code: systemic forms and organ involvement "
            "(e.g. 403488004 SLE of childhood, 308751000119106 glomerular disease due to SLE) count; cutaneous-only, "
            "mucosal-only and neonatal lupus, skin signs of lupus, lupus anticoagulant and lupus vulgaris never do; "
            "drug-induced lupus and 'lupus erythematosus, type not stated' follow their switches. 698694005 'SLE "
            "in remission' is a remission whatever an 'active' clinicalStatus says (remission switch).",
            "AND a fasciculation finding, not negated: a Condition (active, not refuted) with onset or "
            "recorded date within the Condition window, or with no date at all (its clinicalStatus says it is "
            "current; the card says the date is unknown), or an Observation (final, amended, corrected or "
            "preliminary; code = the finding, or LOINC 75325-1 'Symptom' with the finding as value) within "
            "the Observation window. Undated active symptom Conditions count the same way in every rule.",
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
            "sle-in-remission",
            "lupus-exclusions",
            "fasciculation",
            "symptom-observation-code",
        ),
        evidence=(
            "GM-SDE SLE codelist (UoM-Data-Science-Platforms/gm-sde, shared/clinical-code-sets/conditions/sle/1, "
            "commit 8c749a46; derived from the OpenSAFELY SLE codelist), curated as recorded code by code in "
            "plugin/valuesets/sle.json and pinned in tests/plugin/test_terminology.py.",
            "VSAC 'Lupus' value set 2.16.840.1.113883.3.464.1003.117.12.1010 (ICD-10-CM M32.x).",
            "Synthea's lupus module codes every lupus patient as 200936003 'Lupus erythematosus' "
            "(synthetichealth/synthea src/main/resources/modules/lupus.json).",
        ),
    ),
    RuleSpec(
        id="red-flag",
        title="Red flags: urgent evaluation (critical; warning when a known cause explains breathlessness)",
        when=(
            "Weakness, loss of sensation (R20.0/R20.1, hypoesthesia), a bulbar sign (oropharyngeal or unspecified "
            "dysphagia: 40739000, 71457002, 399122003, R13.0, R13.1/R13.10-R13.13, R13.19; dysarthria: 8011004, "
            "R47.1, R47.81) or dyspnea / respiratory distress recorded or observed within the red-flag window (or "
            "an active undated Condition), not negated. Oesophageal dysphagia (40890009, R13.14) and painful "
            "swallowing (30233002) are not red flags.",
        ),
        then=(
            "Critical card: urgent neurologic evaluation; bulbar signs: evaluate today (aspiration risk); "
            "dyspnea with weakness, a bulbar sign or loss of sensation, or with nothing known to explain it: "
            "assess respiratory muscle strength urgently (FVC/NIF).",
            "Dyspnea as the only red flag in a patient with a current interstitial lung disease, pulmonary "
            "hypertension, pleuritis/pericarditis, pulmonary embolism or antiphospholipid syndrome, or heart "
            "failure: warning naming both differentials (respiratory muscle weakness: FVC/NIF; the known cause).",
            "'New weakness' only when the weakness's onset (not its recorded date) lies in the window; an older "
            "onset is shown as 'weakness (onset <year>)', an unknown one as 'weakness'.",
            "No automatic orders; differentials listed (lupus myositis, neuropathy, severe hypokalaemia, motor "
            "neuron disease, myasthenia).",
        ),
        settings=("red_flag_days", "escalation_url"),
        valuesets=(
            "muscle-weakness",
            "loss-of-sensation",
            "dysphagia",
            "dysarthria",
            "dyspnea",
            "cardiopulmonary-causes",
        ),
        evidence=(
            "Neuropsychiatric SLE includes acute inflammatory demyelinating polyradiculoneuropathy "
            "(Guillain-Barre), myasthenia gravis, cranial neuropathy, plexopathy and polyneuropathy (ACR 1999 "
            "case definitions); the EULAR 2010 recommendations for neuropsychiatric SLE cover their diagnosis "
            "and treatment.",
            "Respiratory muscle strength (maximal inspiratory pressure / NIF, vital capacity) predicts outcome in "
            "neuromuscular disease: Orphanet J Rare Dis 2017, doi 10.1186/s13023-017-0598-0.",
            "Codes and their sources: plugin/valuesets/dysphagia.json, dysarthria.json (SNOMED 8011004 in the "
            "SNOMED IPS free set; ICD-10-CM R47.1), cardiopulmonary-causes.json (VSAC Heart Failure, ICD-10-CM "
            "FY2020 list, IPS free set).",
        ),
        links=("eular-npsle-2010", "acr-npsle-1999"),
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
            "A known steroid myopathy (SNOMED 26715006, or G72.0 with T38.0X5-) is not known myositis: it is "
            "named as context (its CK is usually normal) and keeps the 'screen' wording.",
            "A child (younger than the child age, from Patient.birthDate): the card says adult CK ranges do not "
            "apply, and that the default ULN, when used, is an adult value.",
        ),
        settings=(
            "lab_window_days",
            "ck_uln_male",
            "ck_uln_female",
            "ck_uln_unknown_sex",
            "ck_marked_multiple",
            "ck_critical_multiple",
            "rhabdo_creatinine_days",
            "child_age_years",
        ),
        valuesets=(
            "ck-total",
            "ck-mb",
            "ck-order-codes",
            "tsh-order-codes",
            "myositis",
            "steroid-myopathy",
            "glucocorticoid-adverse-effect",
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
            "Systemic corticosteroid records (oral/IV/IM; topical, inhaled, nasal, ophthalmic, otic excluded): "
            "MedicationRequest, MedicationStatement, MedicationAdministration and draft orders, grouped by "
            "ingredient (RxNorm ingredient RxCUI).",
            "Records of one ingredient are one therapy and are never added up. Its current daily dose comes from "
            "ONE record: the active MedicationRequest whose dosage applies today (the most recently authored), "
            "else the most recent current MedicationStatement, else the administrations of the last calendar day "
            "with one when the latest was given in the last 24 hours (that day's doses added up).",
            "Dosage on the calendar: lines with timing.repeat.boundsDuration or count are consecutive steps in "
            "Dosage.sequence order from authoredOn (a statement: effectivePeriod.start), only today's step "
            "counting; count doses bound a course; a line with boundsPeriod counts only inside it. A record "
            "whose every line has ended has ended, whatever its status says. Dose = mg, or strength x count "
            "for dose-form units ({pill}, {tbl}, {tablet}, {tab}, {capsule}, {cap}, 1, tablet(s), capsule(s)), "
            "x frequency / period.",
            "Different ingredients are added up as prednisone equivalents. A draft order (order-select, "
            "order-sign) for an ingredient is a proposed change, current -> proposed: the bands are judged on "
            "the proposed dose, so a taper down is not a high dose.",
            "OR a pulse: a day with at least the pulse dose (prednisone-equivalent, one administration or one "
            "calendar day's administrations), in force today or ended within the pulse look-back.",
        ),
        then=(
            "Pulse: warning naming the drug, its daily dose and the dates given.",
            "Very high (> very-high limit) or high (> high limit): warning. The summary names the drug and "
            "its prednisone equivalent ('Dexamethasone 12 mg/day = prednisone 80 mg/day (high dose)'), or "
            "the change ('Prednisone current 40 mg/day -> proposed 10 mg/day').",
            "Medium (> low band, <= high limit): info, above the SLE maintenance target.",
            "Dose not computable: info 'review dose'. Low band: no card (info above target with the switch).",
            "The detail names the one record each dose comes from, the taper step in force, the records of the "
            "same therapy not added, courses ended despite their status, and dosage lines that could not be "
            "read. Never an action that changes a medication. A current anticonvulsant is added to this card, and a "
            "known steroid myopathy is named.",
            "A child (when an adult would get a non-pulse card): info 'in a child: adult dose bands do not "
            "apply', with the dose in mg/kg/day (prednisone-equivalent mg/day / the newest measured body weight "
            "within the weight look-back) in the summary and its arithmetic in the detail.",
        ),
        settings=(
            "steroid_target_mg",
            "steroid_low_max_mg",
            "steroid_high_above_mg",
            "steroid_very_high_above_mg",
            "steroid_pulse_mg",
            "steroid_card_above_target",
            "pulse_lookback_days",
            "child_age_years",
            "weight_lookback_days",
        ),
        valuesets=(
            "systemic-corticosteroids",
            "anticonvulsants-neuropathic",
            "steroid-myopathy",
            "glucocorticoid-adverse-effect",
            "body-weight",
        ),
        evidence=(
            "Buttgereit 2002 EULAR dose nomenclature (low <= 7.5, medium <= 30, high <= 100, very "
            "high, "
            "pulse >= 250 mg).",
            "EULAR 2023 SLE: maintenance <= 5 mg/day; IV methylprednisolone pulses 250-1000 mg.",
            "Steroid myopathy typical at 40-60 mg/day, usually with a normal CK (Medscape, StatPearls).",
            "FHIR R4 Dosage and Timing (hl7.org/fhir/R4/dosage.html, hl7.org/fhir/R4/datatypes.html#Timing): "
            "Dosage.sequence orders the lines; timing.repeat.boundsDuration, boundsPeriod and count bound them.",
            "The public CDS Hooks Sandbox writes doses as doseQuantity {value, code '{pill}'} without a unit "
            "(github.com/cds-hooks/sandbox, src/reducers/medication-reducers.js).",
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
        evidence=(
            "Antiseizure drugs, gabapentin and pregabalin included, cause tremor and myoclonus "
            "(Saenz-Farret 2022).",
            "Carbamazepine and oxcarbazepine cause hyponatraemia (Berghuis 2017).",
        ),
        links=("saenz-farret-2022", "berghuis-2017"),
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
        then=("Info card with a draft order for nerve conduction studies with needle EMG (CPT 95886).",),
        settings=("ncs_lookback_days", "fasciculation_condition_days", "fasciculation_observation_days"),
        valuesets=(
            "sensory-symptoms",
            "loss-of-sensation",
            "peripheral-neuropathy",
            "muscle-weakness",
            "ncs-emg-codes",
        ),
        evidence=(
            "Peripheral nervous system disease in about 6-18% of SLE in large cohorts (5.9% of 2,097, "
            "Oomatia 2014; 17.7% of 524, Toledano 2017; 7.6% of 1,827 over a mean 7.6 years from diagnosis, "
            "Hanly 2020, doi 10.1002/art.41070).",
            "ACR 1999 case definitions: a mononeuropathy or polyneuropathy is ascertained by examination "
            "with nerve conduction studies / EMG; the EULAR 2010 recommendations for neuropsychiatric SLE "
            "cover peripheral nervous disorders.",
            "Nerve conduction studies and needle EMG are performed together; the number of studies is decided "
            "during the test (AANEM). The draft order is CPT 95886 (plugin/valuesets/ncs-emg-codes.json).",
        ),
        links=("eular-npsle-2010", "acr-npsle-1999", "aanem-ncs-emg", "oomatia-2014", "toledano-2017"),
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


def card_urls(config: Mapping[str, Any] | None = None) -> list[str]:
    """Every URL a card can carry, sorted: each link (``cards.LINKS``), each source URL
    (``cards.SOURCES``) and the configured escalation link. An EHR that removes card links it has not
    allow-listed (Oracle Health's "allowed links") gets exactly this list; it is derived from the card
    module's data, so a new link appears here without a change to this function."""
    from . import cards

    urls = {link.url for link in cards.LINKS.values()}
    urls.update(url for _label, url, _link_names in cards.SOURCES.values())
    escalation = settings_for(config).escalation_url
    if escalation:
        urls.add(escalation)
    return sorted(urls)


@click.command("rules")
@click.option("--links", is_flag=True,
              help="Print only the URLs cards can carry, one per line (an EHR's allow-list of card links).")
def rules_command(links: bool) -> None:
    """Print the clinical rule book: each rule's When/Then, thresholds, value sets and evidence."""
    from cds_hooks.config import load

    if links:
        click.echo("\n".join(card_urls(load())))
        return
    click.echo(format_rulebook(load()), nl=False)
