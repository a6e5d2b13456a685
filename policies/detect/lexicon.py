"""Read-only dictionaries shipped in policies/data/ (built by policies/build_data.py).

Each loader reads its gzip'd text file once and returns an immutable set or
mapping; the cache only avoids re-reading the file.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _lines(name: str) -> list[str]:
    with gzip.open(DATA_DIR / name, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


@cache
def icd10cm_codes() -> frozenset[str]:
    """Every ICD-10-CM code (categories and subcodes), upper case, without the dot."""
    return frozenset(_lines("icd10cm.txt.gz"))


@cache
def drug_names() -> Mapping[str, int]:
    """Lower-case single-word drug names → tier (1 commonly prescribed, 2 other)."""
    out: dict[str, int] = {}
    for line in _lines("drugs.txt.gz"):
        name, tier = line.split("\t")
        out[name] = int(tier)
    return MappingProxyType(out)


@cache
def first_names() -> Mapping[str, bool]:
    """Lower-case given names → True when the name is also an everyday word ("grace")."""
    out: dict[str, bool] = {}
    for line in _lines("first_names.txt.gz"):
        name, word = line.split("\t")
        out[name] = word == "1"
    return MappingProxyType(out)


@cache
def last_names() -> frozenset[str]:
    """Lower-case frequent surnames."""
    return frozenset(_lines("last_names.txt.gz"))


@cache
def condition_names() -> Mapping[str, tuple[str, float]]:
    """ICD-10-CM condition names ("peptic ulcer") -> (category, weight)."""
    out: dict[str, tuple[str, float]] = {}
    for line in _lines("conditions.txt.gz"):
        name, category, weight = line.split("\t")
        out[name] = (category, float(weight))
    return MappingProxyType(out)


@cache
def body_sites() -> tuple[frozenset[str], frozenset[str]]:
    """(body sites, conditions written with one: "fracture of ... radius"), from ICD-10-CM."""
    sites: set[str] = set()
    conditions: set[str] = set()
    for line in _lines("body_sites.txt.gz"):
        kind, word = line.split("\t")
        (sites if kind == "site" else conditions).add(word)
    return frozenset(sites), frozenset(conditions)
