"""Every threshold, look-back window and switch of the clinical rules, in one place.

Values come from the application's settings mapping (``HookRequest.config`` / the ``config`` given to
``cds_services``), whose ``LUPUS_CDS_*`` keys may come from the environment as strings, so each value is
parsed here. A key that is absent (or empty) takes the default listed in :data:`SETTINGS`; a key that cannot
be parsed raises :class:`~cds_hooks.config.ConfigError` (a ``ValueError``) naming the key (a mis-typed
threshold must not silently change care).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cds_hooks.config import ConfigError, parse_bool


@dataclass(frozen=True)
class SettingSpec:
    """One configurable value: its key, type, default, a sentence for the README and rule book, and (for a
    clinical number) the public source that states it; the rule book prints the source, and a test names it."""

    key: str
    kind: type
    default: Any
    description: str
    source: str = ""


#: the critical cut-offs of the secondary electrolytes come from one published laboratory list
ARUP_CRITICAL_VALUES = (
    "ARUP Laboratories Critical Values List (CORP-APPEND-0104A rev. 26, April 2017): calcium total < 6.0 mg/dL, "
    "calcium ionized < 0.78 mmol/L, phosphorus < 1.0 mg/dL, sodium < 120 mmol/L"
)

#: attribute name -> spec. The attribute names are what the rules use.
SETTINGS: dict[str, SettingSpec] = {
    spec_name: spec
    for spec_name, spec in (
        # --- which diagnoses count as SLE (section 1.1, 5.0 gate 1)
        (
            "count_drug_induced_lupus",
            SettingSpec(
                "LUPUS_CDS_COUNT_DRUG_INDUCED_LUPUS",
                bool,
                False,
                "Count drug-induced lupus (M32.0, 201436003 and relatives) as SLE.",
            ),
        ),
        (
            "count_unspecified_lupus",
            SettingSpec(
                "LUPUS_CDS_COUNT_UNSPECIFIED_LUPUS",
                bool,
                True,
                "Count SNOMED 200936003 'Lupus erythematosus' (Synthea's code; also the parent of cutaneous "
                "lupus) "
                "as SLE; cards then say the lupus type is unspecified.",
            ),
        ),
        (
            "count_unconfirmed_sle",
            SettingSpec(
                "LUPUS_CDS_COUNT_UNCONFIRMED_SLE",
                bool,
                False,
                "Count an SLE Condition whose verificationStatus is unconfirmed, provisional, differential.",
            ),
        ),
        (
            "count_sle_in_remission",
            SettingSpec(
                "LUPUS_CDS_COUNT_SLE_IN_REMISSION",
                bool,
                True,
                "Count an SLE Condition whose clinicalStatus is remission, or that is coded as SLE in remission "
                "(698694005) (SLE is chronic; remission does not remove myositis or neuropathy risk).",
            ),
        ),
        # --- look-back windows, in days
        (
            "fasciculation_condition_days",
            SettingSpec(
                "LUPUS_CDS_FASCICULATION_CONDITION_DAYS",
                int,
                90,
                "A fasciculation (or other symptom) Condition counts when onset or recorded date is this "
                "recent; an active one with no date at all counts too (shown as date unknown).",
            ),
        ),
        (
            "fasciculation_observation_days",
            SettingSpec(
                "LUPUS_CDS_FASCICULATION_OBSERVATION_DAYS",
                int,
                30,
                "A fasciculation (or other symptom) Observation counts when its effective date is this "
                "recent.",
            ),
        ),
        (
            "lab_window_days",
            SettingSpec(
                "LUPUS_CDS_LAB_WINDOW_DAYS",
                int,
                30,
                "A CK, potassium or magnesium result this recent counts as 'checked'; an active lab order "
                "this "
                "recent counts as 'pending'.",
            ),
        ),
        (
            "red_flag_days",
            SettingSpec(
                "LUPUS_CDS_RED_FLAG_DAYS",
                int,
                14,
                "Weakness, loss of sensation, oropharyngeal dysphagia, dysarthria or dyspnea recorded this "
                "recently is a red flag; weakness is called new only when its onset is this recent.",
            ),
        ),
        (
            "ncs_lookback_days",
            SettingSpec(
                "LUPUS_CDS_NCS_LOOKBACK_DAYS",
                int,
                365,
                "A nerve conduction study / EMG this recent suppresses the NCS/EMG suggestion.",
            ),
        ),
        (
            "renal_lab_days",
            SettingSpec(
                "LUPUS_CDS_RENAL_LAB_DAYS",
                int,
                365,
                "An eGFR result this recent is used for the renal-involvement flag.",
            ),
        ),
        (
            "rhabdo_creatinine_days",
            SettingSpec(
                "LUPUS_CDS_RHABDO_CREATININE_DAYS",
                int,
                7,
                "With CK at or above the marked multiple of ULN, creatinine is suggested unless one is this "
                "recent.",
            ),
        ),
        (
            "pulse_lookback_days",
            SettingSpec(
                "LUPUS_CDS_PULSE_LOOKBACK_DAYS",
                int,
                30,
                "A corticosteroid pulse whose last dose is this recent triggers the steroid review.",
            ),
        ),
        # --- CK (section 2.3)
        (
            "ck_uln_male",
            SettingSpec(
                "LUPUS_CDS_CK_ULN_MALE",
                float,
                308.0,
                "CK upper limit of normal, U/L, male, when the lab gives none.",
            ),
        ),
        (
            "ck_uln_female",
            SettingSpec(
                "LUPUS_CDS_CK_ULN_FEMALE",
                float,
                192.0,
                "CK upper limit of normal, U/L, female, when the lab gives none.",
            ),
        ),
        (
            "ck_uln_unknown_sex",
            SettingSpec(
                "LUPUS_CDS_CK_ULN_UNKNOWN_SEX",
                float,
                192.0,
                "CK upper limit of normal, U/L, when sex is unknown (the lower limit, for sensitivity).",
            ),
        ),
        (
            "ck_marked_multiple",
            SettingSpec(
                "LUPUS_CDS_CK_MARKED_MULTIPLE",
                float,
                5.0,
                "CK at or above this multiple of ULN is significant muscle injury (creatinine/urinalysis "
                "suggested).",
            ),
        ),
        (
            "ck_critical_multiple",
            SettingSpec(
                "LUPUS_CDS_CK_CRITICAL_MULTIPLE",
                float,
                10.0,
                "CK at or above this multiple of ULN: possible rhabdomyolysis, critical card.",
            ),
        ),
        # --- electrolytes (section 2.3)
        (
            "hypokalemia_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPOKALEMIA_MMOL_L",
                float,
                3.5,
                "Potassium below this (mmol/L) is low, when the lab gives no reference range.",
            ),
        ),
        (
            "hypokalemia_critical_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPOKALEMIA_CRITICAL_MMOL_L",
                float,
                2.5,
                "Potassium below this (mmol/L), or flagged LL, is critical.",
            ),
        ),
        (
            "hypomagnesemia_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOMAGNESEMIA_MG_DL",
                float,
                1.7,
                "Magnesium below this (mg/dL; 1.7 mg/dL = 0.70 mmol/L) is low, when the lab gives no range. "
                "StatPearls uses 1.46.",
            ),
        ),
        (
            "hypomagnesemia_critical_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOMAGNESEMIA_CRITICAL_MG_DL",
                float,
                1.2,
                "Magnesium below this (mg/dL; about 0.5 mmol/L), or flagged LL, is critical.",
            ),
        ),
        (
            "hyperkalemia_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPERKALEMIA_MMOL_L",
                float,
                5.5,
                "Potassium at or above this (mmol/L) is high, when the lab gives neither a flag nor a range.",
                "UK Kidney Association, Clinical Practice Guidelines: Treatment of Acute Hyperkalaemia in Adults "
                "(2023): hyperkalaemia is K >= 5.5 mmol/L (mild 5.5-5.9, moderate 6.0-6.4, severe >= 6.5)",
            ),
        ),
        (
            "hyperkalemia_critical_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPERKALEMIA_CRITICAL_MMOL_L",
                float,
                6.0,
                "Potassium at or above this (mmol/L), or flagged HH, is critical (ECG advised).",
                "UK Kidney Association 2023 hyperkalaemia guideline: moderate hyperkalaemia from 6.0 mmol/L, when a "
                "12-lead ECG is taken at once (NHS GGC handbook implementing it: ECG if K >= 6 mmol/L)",
            ),
        ),
        (
            "hypocalcemia_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOCALCEMIA_MG_DL",
                float,
                8.5,
                "Total calcium (corrected for a same-day albumin) below this (mg/dL; 8.5 mg/dL = 2.12 mmol/L) is low, "
                "when the lab gives neither a flag nor a range.",
                "StatPearls, Hypocalcemia (NBK430912): total serum calcium 8.5-10.5 mg/dL (2.12-2.62 mmol/L); "
                "0.8 mg/dL per 1 g/dL of albumin",
            ),
        ),
        (
            "hypocalcemia_critical_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOCALCEMIA_CRITICAL_MG_DL",
                float,
                6.0,
                "Total calcium below this (mg/dL; 1.50 mmol/L), or flagged LL, is critical (tetany risk).",
                ARUP_CRITICAL_VALUES,
            ),
        ),
        (
            "ionized_hypocalcemia_mmol_l",
            SettingSpec(
                "LUPUS_CDS_IONIZED_HYPOCALCEMIA_MMOL_L",
                float,
                1.12,
                "Ionized calcium below this (mmol/L; 4.5 mg/dL) is low, when the lab gives neither a flag nor a range.",
                "OhioHealth Laboratory Services test LAB54 Calcium, Ionized: reference 4.5-5.3 mg/dL "
                "(= 1.12-1.32 mmol/L)",
            ),
        ),
        (
            "ionized_hypocalcemia_critical_mmol_l",
            SettingSpec(
                "LUPUS_CDS_IONIZED_HYPOCALCEMIA_CRITICAL_MMOL_L",
                float,
                0.78,
                "Ionized calcium below this (mmol/L), or flagged LL, is critical.",
                ARUP_CRITICAL_VALUES,
            ),
        ),
        (
            "hypophosphatemia_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOPHOSPHATEMIA_MG_DL",
                float,
                2.5,
                "Phosphate below this (mg/dL; 2.5 mg/dL = 0.81 mmol/L) is low, when the lab gives neither a flag "
                "nor a range.",
                "StatPearls, Hypophosphatemia (NBK493172): adult serum phosphate < 2.5 mg/dL; Merck Manual "
                "Professional, Hypophosphatemia: < 2.5 mg/dL (0.81 mmol/L), severe < 1 mg/dL (0.32 mmol/L)",
            ),
        ),
        (
            "hypophosphatemia_critical_mg_dl",
            SettingSpec(
                "LUPUS_CDS_HYPOPHOSPHATEMIA_CRITICAL_MG_DL",
                float,
                1.0,
                "Phosphate below this (mg/dL; 0.32 mmol/L), or flagged LL, is severe: the card becomes a warning.",
                ARUP_CRITICAL_VALUES + "; Merck Manual Professional, Hypophosphatemia (severe < 1 mg/dL)",
            ),
        ),
        (
            "hyponatremia_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPONATREMIA_MMOL_L",
                float,
                135.0,
                "Sodium below this (mmol/L) is low, when the lab gives neither a flag nor a range.",
                "StatPearls, Hyponatremia (NBK470386): serum sodium < 135 mEq/L (severe < 125 mEq/L)",
            ),
        ),
        (
            "hyponatremia_critical_mmol_l",
            SettingSpec(
                "LUPUS_CDS_HYPONATREMIA_CRITICAL_MMOL_L",
                float,
                120.0,
                "Sodium below this (mmol/L), or flagged LL, is severe: the card becomes a warning.",
                ARUP_CRITICAL_VALUES,
            ),
        ),
        (
            "egfr_renal_threshold",
            SettingSpec(
                "LUPUS_CDS_EGFR_RENAL_THRESHOLD",
                float,
                60.0,
                "eGFR below this (mL/min/1.73 m2) sets the renal-involvement flag.",
            ),
        ),
        (
            "ppi_long_term_days",
            SettingSpec(
                "LUPUS_CDS_PPI_LONG_TERM_DAYS",
                int,
                365,
                "A proton pump inhibitor used this long is called long-term use in the magnesium card.",
            ),
        ),
        # --- corticosteroid dose bands (section 4.2), prednisone-equivalent mg
        (
            "steroid_target_mg",
            SettingSpec(
                "LUPUS_CDS_STEROID_TARGET_MG", float, 5.0, "EULAR 2023 SLE maintenance target, mg/day."
            ),
        ),
        (
            "steroid_low_max_mg",
            SettingSpec(
                "LUPUS_CDS_STEROID_LOW_MAX_MG", float, 7.5, "Upper end of the low-dose band, mg/day."
            ),
        ),
        (
            "steroid_high_above_mg",
            SettingSpec(
                "LUPUS_CDS_STEROID_HIGH_ABOVE_MG",
                float,
                30.0,
                "Above this (mg/day) the dose is high: warning card. Up to it (and above the low band): "
                "info card.",
            ),
        ),
        (
            "steroid_very_high_above_mg",
            SettingSpec(
                "LUPUS_CDS_STEROID_VERY_HIGH_ABOVE_MG",
                float,
                100.0,
                "Above this (mg/day) the dose is very high.",
            ),
        ),
        (
            "steroid_pulse_mg",
            SettingSpec(
                "LUPUS_CDS_STEROID_PULSE_MG",
                float,
                250.0,
                "A day's corticosteroid dose (one administration, or one calendar day's administrations) at or "
                "above this (mg prednisone-equivalent) is a pulse.",
            ),
        ),
        (
            "steroid_card_above_target",
            SettingSpec(
                "LUPUS_CDS_STEROID_CARD_ABOVE_TARGET",
                bool,
                False,
                "Also show an info card for doses above the SLE target but within the low band (> 5 to 7.5 "
                "mg/day).",
            ),
        ),
        # --- children: adult CK ranges and steroid bands do not apply
        (
            "child_age_years",
            SettingSpec(
                "LUPUS_CDS_CHILD_AGE_YEARS",
                int,
                18,
                "A patient younger than this (years, from Patient.birthDate) is a child: the CK and steroid "
                "cards say adult CK ranges and steroid dose bands do not apply.",
            ),
        ),
        (
            "weight_lookback_days",
            SettingSpec(
                "LUPUS_CDS_WEIGHT_LOOKBACK_DAYS",
                int,
                60,
                "A body weight this recent gives a child's corticosteroid dose in mg/kg/day.",
            ),
        ),
        # --- links
        (
            "escalation_url",
            SettingSpec(
                "LUPUS_CDS_ESCALATION_URL",
                str,
                "",
                "URL of the local urgent neurology escalation pathway, linked from the red-flag card (none "
                "if empty).",
            ),
        ),
    )
}


def parse_value(spec: SettingSpec, raw: Any) -> Any:
    """``raw`` (possibly an environment string) as ``spec.kind``; :class:`ValueError` names the key."""
    if spec.kind is bool:
        # the protocol layer's one list of spellings (cds_hooks.config.TRUE_WORDS / FALSE_WORDS)
        return spec.default if raw == "" else parse_bool(raw, spec.key)
    if spec.kind is str:
        return "" if raw is None else str(raw).strip()
    try:
        value = spec.kind(str(raw).strip()) if isinstance(raw, str) else spec.kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(spec.key, f"{raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(spec.key, f"{raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    """Parsed settings; build with :meth:`from_config`. Attribute names are the keys of :data:`SETTINGS`."""

    count_drug_induced_lupus: bool
    count_unspecified_lupus: bool
    count_unconfirmed_sle: bool
    count_sle_in_remission: bool
    fasciculation_condition_days: int
    fasciculation_observation_days: int
    lab_window_days: int
    red_flag_days: int
    ncs_lookback_days: int
    renal_lab_days: int
    rhabdo_creatinine_days: int
    pulse_lookback_days: int
    ck_uln_male: float
    ck_uln_female: float
    ck_uln_unknown_sex: float
    ck_marked_multiple: float
    ck_critical_multiple: float
    hypokalemia_mmol_l: float
    hypokalemia_critical_mmol_l: float
    hypomagnesemia_mg_dl: float
    hypomagnesemia_critical_mg_dl: float
    hyperkalemia_mmol_l: float
    hyperkalemia_critical_mmol_l: float
    hypocalcemia_mg_dl: float
    hypocalcemia_critical_mg_dl: float
    ionized_hypocalcemia_mmol_l: float
    ionized_hypocalcemia_critical_mmol_l: float
    hypophosphatemia_mg_dl: float
    hypophosphatemia_critical_mg_dl: float
    hyponatremia_mmol_l: float
    hyponatremia_critical_mmol_l: float
    egfr_renal_threshold: float
    ppi_long_term_days: int
    steroid_target_mg: float
    steroid_low_max_mg: float
    steroid_high_above_mg: float
    steroid_very_high_above_mg: float
    steroid_pulse_mg: float
    steroid_card_above_target: bool
    child_age_years: int
    weight_lookback_days: int
    escalation_url: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None) -> Settings:
        config = config or {}
        values = {}
        for name, spec in SETTINGS.items():
            raw = config.get(spec.key)
            values[name] = spec.default if raw is None else parse_value(spec, raw)
        return cls(**values)

    def key_of(self, name: str) -> str:
        return SETTINGS[name].key


_cache: dict[int, tuple[Mapping[str, Any], Settings]] = {}


def settings_for(config: Mapping[str, Any] | None) -> Settings:
    """Parsed settings for ``config``, cached per mapping object (the app passes the same one each call)."""
    if config is None:
        return Settings.from_config(None)
    hit = _cache.get(id(config))
    # keep a reference to the mapping so its id cannot be reused by another object while cached
    if hit is not None and hit[0] is config:
        return hit[1]
    parsed = Settings.from_config(config)
    if len(_cache) > 32:
        _cache.clear()
    _cache[id(config)] = (config, parsed)
    return parsed
