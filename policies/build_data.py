"""Build the detector dictionaries in policies/data/ from public PyPI data sets.

Run at build time only (``python -m policies.build_data``) after
``pip install simple-icd-10-cm drug-named-entity-recognition english-words names``.
The generated files are committed, so the gateway never needs these packages.
Outputs are plain gzip'd text (one entry a line) written deterministically
(gzip mtime 0, sorted lines) so a rebuild from the same inputs is byte-identical.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import pickle  # reads the drug package's own bundled dictionary, at build time only
import re
import sys
from collections.abc import Iterable
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

_ICD_RE = re.compile(r"^[A-Z][0-9][0-9A-Z]{1,5}$")
_DRUG_TOKEN_RE = re.compile(r"^[a-z][a-z-]{3,}[a-z]$")

# Drug names that are also everyday words, company names or common nouns in
# ordinary business mail; they would turn signatures and invoices into "health".
_DRUG_DENY = frozenset(
    """
    anions armour cloves cobre cuivre eisen evolus fargo far-go flours hierro kobalt kupfer
    longum modus niobio olean pecans planum pulsar selen snares sulfur talco tetris vitae
    votum windol yeasts lithium oxygen iron zinc copper silver gold sodium calcium potassium
    magnesium caffeine alcohol ethanol nicotine water glucose sucrose fructose lactose
    carbon nitrogen helium hydrogen chlorine iodine fluoride sulfate nitrate acetone
    capsaicin menthol camphor lanolin glycerin glycerol talc charcoal honey ginger garlic
    cinnamon turmeric peppermint lavender chamomile aloe cocoa coffee vinegar salt sugar
    protein collagen keratin gelatin starch cellulose silicone latex plastic
    statin coxib coxibs sartan penem opsin opsins porin porins titin talin talens tensin
    nestin septin cullin furin apelin leptin orexin mucins lamins avidin nisin escin
    prolia progen unigen genesis vista nexus prime matrix fusion zenith orbit triton
    """.split()
)


def _write(name: str, lines: Iterable[str]) -> None:
    """Write sorted unique lines to DATA_DIR/name as gzip with a fixed mtime."""
    body = "".join(f"{line}\n" for line in sorted(set(lines))).encode()
    with (
        (DATA_DIR / name).open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        gz.write(body)
    count = body.count(b"\n")
    print(f"{name}: {count} entries", file=sys.stderr)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"build_data: install the PyPI package providing {module!r} first")
    return Path(spec.origin).parent


def build_icd10cm() -> None:
    """Every ICD-10-CM code (categories and subcodes), undotted, from the CDC release."""
    data = _package_dir("simple_icd_10_cm") / "data"
    (code_list,) = sorted(data.glob("code-list-*.txt"))
    codes = []
    for line in code_list.read_text().splitlines():
        code = line.split(" ", 1)[0].strip().replace(".", "")
        if _ICD_RE.match(code):
            codes.append(code)
    _write("icd10cm.txt.gz", codes)


def _english_words() -> frozenset[str]:
    from english_words import get_english_words_set  # type: ignore[import-untyped]

    # Only words written in lower case: proper nouns (Aaron, Angelica) are no
    # evidence that a token is an everyday word.
    words = get_english_words_set(["web2"], lower=False, alpha=True)
    return frozenset(w for w in words if w.islower())


def _census(name: str) -> list[str]:
    """Names from a 1990 US Census frequency file, most frequent first."""
    path = _package_dir("names") / name
    return [line.split()[0].lower() for line in path.read_text().splitlines() if line.strip()]


def build_drugs(english: frozenset[str], first_names: frozenset[str]) -> None:
    """Single-word drug names: "name<TAB>tier" (1 = commonly prescribed, 2 = other)."""
    path = _package_dir("drug_named_entity_recognition") / "drug_ner_dictionary.pkl.bz2"
    with bz2.open(path, "rb") as f:
        d = pickle.load(f)  # noqa: S301 - the package's own bundled data, build time only
    variant_to_canonical: dict[str, list[str]] = d["drug_variant_to_canonical"]
    canonical_data: dict[str, dict[str, object]] = d["drug_canonical_to_data"]
    common = {c for c, data in canonical_data.items() if data.get("medline_plus_id")}
    out: dict[str, int] = {}
    for variant, canonicals in variant_to_canonical.items():
        if not _DRUG_TOKEN_RE.match(variant) or variant in _DRUG_DENY:
            continue
        if variant in first_names:
            continue
        is_common = any(c in common for c in canonicals)
        # A dictionary word is a drug here only when it is itself the generic
        # name of a commonly prescribed drug (aspirin, morphine, codeine).
        if variant in english and not (is_common and variant in canonicals):
            continue
        tier = 1 if is_common else 2
        out[variant] = min(tier, out.get(variant, tier))
    _write("drugs.txt.gz", (f"{name}\t{tier}" for name, tier in out.items()))


def build_names(english: frozenset[str]) -> frozenset[str]:
    """Given names ("name<TAB>1" when also an English word) and frequent surnames."""
    first = frozenset(_census("dist.male.first") + _census("dist.female.first"))
    # Flagging "will", "grace", "mark" lets detectors demand stronger context
    # before reading them as a name.
    _write("first_names.txt.gz", (f"{n}\t{int(n in english)}" for n in first))
    # The long tail of surnames is mostly ordinary words; the top 30,000 cover
    # about 90% of the population.
    last = [n for n in _census("dist.all.last")[:30_000] if len(n) > 1]
    _write("last_names.txt.gz", last)
    return first


def main() -> None:
    """Regenerate every file in policies/data/."""
    DATA_DIR.mkdir(exist_ok=True)
    english = _english_words()
    build_icd10cm()
    first = build_names(english)
    build_drugs(english, first)


if __name__ == "__main__":
    main()
