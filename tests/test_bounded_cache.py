"""Caches bounded by the memory they hold (estimated bytes), not only by their number of entries: a worker
that has seen ten thousand patients must not hold ten thousand patients' validated resources."""

from __future__ import annotations

from fhir.resources.observation import Observation

from plugin import fhirdata
from plugin.bounded_cache import byte_bounded_cache


def test_entries_are_evicted_oldest_first_past_the_byte_budget():
    calls = []

    @byte_bounded_cache(2400, lambda args, result: 300)
    def double(n):
        calls.append(n)
        return 2 * n

    for n in range(10):
        assert double(n) == 2 * n
    info = double.cache_info()
    assert info.currsize == 8 and info.bytes == 2400 <= info.max_bytes
    double(9)
    double(2)  # the eight newest are kept
    assert calls == list(range(10))
    double(0)  # evicted: computed again
    assert calls[-1] == 0


def test_an_entry_bigger_than_an_eighth_of_the_budget_is_not_kept():
    @byte_bounded_cache(8000, lambda args, result: len(args[0]))
    def length(text):
        return len(text)

    assert length("x" * 5000) == 5000
    assert length("y" * 10) == 10
    assert length.cache_info().currsize == 1 and length.cache_info().bytes == 10


def test_cache_clear_empties_it_and_it_reads_like_an_lru_cache():
    @byte_bounded_cache(1000, lambda args, result: 10)
    def identity(value):
        return value

    identity(1)
    identity(1)
    assert identity.cache_info().hits == 1
    assert identity.cache_parameters()["maxsize"] is not None  # what bench_hook_call empties
    identity.cache_clear()
    assert identity.cache_info().currsize == 0 and identity.cache_info().bytes == 0


def lab(n: int) -> dict:
    return {"resourceType": "Observation", "id": f"obs-{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
            "subject": {"reference": f"Patient/p-{n}"}, "effectiveDateTime": "2026-11-01T10:00:00Z",
            "valueQuantity": {"value": 4.0 + n / 100000, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"},
            "note": [{"text": "x" * 2000}]}  # a big resource: few fit in the budget


def test_validated_resources_stay_within_their_byte_budget():
    fhirdata._validate_cached.cache_clear()
    for n in range(1200):  # each ~2.4 KB of JSON, ~20 KB estimated: 24 MB if all were kept
        model, why = fhirdata.validate(Observation, lab(n))
        assert model is not None, why
    info = fhirdata._validate_cached.cache_info()
    assert info.bytes <= fhirdata.VALIDATED_RESOURCES_BYTES
    assert info.currsize < 1200
    assert fhirdata.validate(Observation, lab(1199))[0] is not None  # the newest is still there
    assert fhirdata._validate_cached.cache_info().hits == info.hits + 1


def test_a_long_string_is_parsed_but_never_cached_as_a_date():
    fhirdata._parse_datetime_text.cache_clear()
    assert fhirdata.parse_datetime("2026-11-01T10:00:00Z") is not None
    assert fhirdata.parse_datetime("2026-11-01T10:00:00Z" + " " * 10_000 + "junk") is None
    assert fhirdata._parse_datetime_text.cache_info().currsize == 1
