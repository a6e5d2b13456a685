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
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
    from english_words import get_english_words_set

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


# --- condition names and body sites, from the ICD-10-CM descriptions ----------------------

# Chapters read for condition names: infections to injuries (A00-S99). Left out:
# T (poisonings, drug effects: "toxic effect", "adverse effect"), V-Y (external
# causes: "pedestrian injured in collision") and Z (reasons for contact: "family
# history", "encounter for screening"): their headings are no diagnosis.
_CONDITION_CHAPTERS = "ABCDEFGHIJKLMNOPQRS"
# A heading's condition name ends where its qualification starts.
_HEAD_END = re.compile(
    r"[,;:]| (?:of|with|without|due to|in|following|complicating|associated with|involving"
    r"|affecting|at|on|by|from|for|not|as|other than|except|classified|resulting|caused by"
    r"|during|after|before|into|to|and|or)(?= |$)"
)
_HEAD_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_QUALIFIERS = frozenset({"other", "unspecified", "specified", "certain", "unsp", "oth"})
# Headings that name a kind of finding, not a condition ("other disorders").
_GENERIC_HEADS = frozenset(
    """
    disorder disorders disease diseases condition conditions complication complications
    symptom symptoms sign signs finding findings abnormality abnormalities injury injuries
    effect effects care problem problems factor factors status encounter observation
    examination history contact exposure presence absence sequelae malformation malformations
    anomaly anomalies neoplasm neoplasms deformity deformities infection infections state
    states syndrome syndromes type types form forms result results reaction reactions change
    changes defect defects lesion lesions variant variants manifestation manifestations
    """.split()
)
# One-word headings that are everyday words: in mail they are rarely about a
# patient, so they count only as the hand-written vocabulary weighs them.
_EVERYDAY_HEADINGS = frozenset(
    """
    absent abuse acute blackout blister blood bruising callus chills colic compression contour
    cough crowding curvature damage deficiency degeneration deletion deletions deposits
    deviation difficulties difficulty disorientation displacement disproportion disruption
    dissection disturbance disturbances doubling duplication duplications dysfunction
    elevation endocrine enlargement erosion eversion excessive failure fainting fatigue fear
    feeling female fever finding flushing folds fracture fractures frailty freckles frequency
    fusion granulation headache heartburn heavy hesitancy hiccough hostility illness imbalance
    impaction incompetence indigestion individual inflammation inflammations instability
    interruption inversion lack lobulated loss lump male malaise malfunction malposition mild
    nausea need nervousness nodules obesity obstruction onset overactivity overfeeding
    overweight pain pallor perforation perforations pregnancy prolapse puckering recession
    retention retraction rotation rupture scarring sedative senescence separation shock
    shortness sinus sites smoking sneezing snoring spasm splitting spotting sprain stiffness
    strain straining supervision suppression tear termination thoracic torsion trauma type
    ulcer ulceration underfeeding underweight unhappiness unsteadiness urgency variations
    vomiting weakness web webbing worries wheezing arrest bite bleeding calculus fissure
    plague scar stone tremor occlusion dilatation abrasion dislocation
    """.split()
)
# Names under some code that are everyday phrases too ("culture shock").
_EVERYDAY_PHRASES = frozenset(
    {
        "culture shock", "primary failure", "rotation failure", "adult failure",
        "mixed disorder", "primary disorder", "complete lesion", "mixed lesions", "late lesions",
        "primary lesions", "open bite", "cross syndrome", "grey syndrome",
        # a specialty's name in every provider directory and signature
        "infectious disease", "infectious diseases",
    }
)  # fmt: skip


# Words that name a condition by their form: "-itis", "-osis", "-emia", "-pathy"...
_MEDICAL_FORM = re.compile(
    r"(?:itis|itides|osis|oses|iasis|iases|emia|emias|oma|omas|omata|pathy|pathies|algia"
    r"|plasia|trophy|trophies|ectasis|ectasia|uria|rrhea|rrhagia|rrhage|cele|ism|phobia|plegia"
    r"|paresis|penia|megaly|spasm|ptosis|dynia|lepsy|tropia|phoria|opia|sclerosis|thorax)$"
)
# Nouns a condition name ends with although they have no medical form
# ("peptic ulcer", "heart failure", "meningococcal infection"). A name ending in
# anything else ("delayed delivery", "old age", "mixed type") is left out: the
# headings of a classification also hold everyday phrases.
_CONDITION_NOUNS = frozenset(
    """
    syndrome disease disorder fracture fractures deficiency cyst cysts fever fevers abscess
    infection infections failure fistula hernia infarction degeneration pain pneumonia ulcer
    obstruction hypertension hypotension dysfunction aneurysm insufficiency headache edema
    injury tenderness stricture syphilis cataract goiter laceration occlusion palsy
    schizophrenia migraine polyp dislocation angina purpura amputation prolapse deformity
    neoplasm incontinence varices gout detachment tachycardia bradycardia leprosy mellitus
    depression nevus intoxication apnea adhesions hemorrhoids typhus ataxia urticaria
    subluxation tumor tumors emphysema arrest pneumothorax dependence swelling calcification
    rigidity blindness deafness cough osteomalacia fibrillation flutter asthma bifida bleeding
    dystonia alopecia rupture effusion erythematosus pleurisy entrapment sprain strain seizure
    seizures plague inflammation insomnia vomiting atresia constipation ectropion entropion
    menorrhagia hydrocephalus malaria regurgitation dyskinesia malnutrition calculus stone
    stones trauma fissure dilatation pterygium vertigo ringworm tapeworm nystagmus congestion
    strabismus diphtheria yaws ileus dementia abortion hemophilia torsion scar caries amnesia
    pemphigus impetigo dysphagia scleroderma wart gangrene torticollis anthrax tremor
    hypersomnia syncope stupor delirium rickets lymphedema eczema rash infertility dysentery
    porphyria pruritus immunodeficiency reflux dyspareunia aphasia akathisia chorea colic
    tetany influenza measles mumps rubella varicella zoster rabies tetanus cholera scabies
    smallpox vitiligo sciatica lupus psoriasis acne keloid hematoma wound burn bite contusion
    abrasion avulsion tear lesion lesions mole palpitations dehydration jaundice shock
    """.split()
)


_FUNCTION_WORDS = frozenset(
    "the and for with from into onto upon over under than that this these those"
    " not nor but any all some".split()
)


def _heading(description: str) -> list[str]:
    """The condition name a heading starts with, as words ("Essential (primary)
    hypertension" -> essential hypertension), or [] when it names none."""
    # "Ménière's disease" as "meniere's disease"; parenthesised and bracketed asides go.
    folded = unicodedata.normalize("NFKD", description).encode("ascii", "ignore").decode()
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", folded).lower()
    end = _HEAD_END.search(text)
    words = _HEAD_WORD.findall(text[: end.start()] if end else text)
    while words and words[0] in _QUALIFIERS:
        words = words[1:]
    while words and words[-1] in ("nos", "nec"):  # "not otherwise specified"
        words = words[:-1]
    if not words or all(w in _GENERIC_HEADS or w in _QUALIFIERS for w in words):
        return []
    if len(words[0]) < 3 or words[0] in _FUNCTION_WORDS:
        return []  # "a malignant tumor", "for vertical fractures": no name starts so
    if " ".join(words) in _EVERYDAY_PHRASES:
        return []
    last = words[-1]
    if not (last in _CONDITION_NOUNS or any(_MEDICAL_FORM.search(w) for w in words)):
        return []  # "pityriasis rosea" counts by its first word
    if len(words) == 1:
        # "Abdominal and pelvic pain" cut at "and" leaves an adjective, not a name.
        cut_at_and = end is not None and end.group().strip() in ("and", "or")
        if cut_at_and or not last.isalpha() or last in _EVERYDAY_HEADINGS:
            return []
    return words


def build_conditions() -> None:
    """Condition names from ICD-10-CM headings: "term<TAB>category<TAB>weight".

    A heading and its inclusion terms give a name ("peptic ulcer", "diphtheria",
    "essential hypertension"); the category is the code's (a sensitive one for
    mental health, substance use, HIV, pregnancy...). Symptoms and findings
    (chapter R) weigh less than diagnoses.
    """
    sys.path.insert(0, str(DATA_DIR.parent.parent))
    from policies.detect.health import icd_category

    cm = _import_icd()
    best: dict[str, tuple[str, float]] = {}
    for code in cm.get_all_codes(with_dots=False):
        if code[0] not in _CONDITION_CHAPTERS or not cm.is_category_or_subcategory(code):
            continue
        category = "diagnosis" if code[0] == "R" else icd_category(code.replace(".", ""))
        if category == "icd10":
            category = "diagnosis"
        weight = 0.8 if code[0] == "R" else 1.0
        for description in [cm.get_description(code), *cm.get_inclusion_term(code)]:
            words = _heading(description)
            if not words:
                continue
            term = " ".join(words)
            # A name under several codes keeps its heaviest reading.
            if weight > best.get(term, ("", 0.0))[1]:
                best[term] = (category, weight)
    _write("conditions.txt.gz", (f"{t}\t{c}\t{w}" for t, (c, w) in best.items()))


# Last words of injury and musculoskeletal headings that are no body part.
_NOT_SITES = frozenset(
    """
    abrasion area arch branches cage canal cavity elsewhere floor growth implant level
    pathways procedure process region regions relationship roof scoliosis site sites size
    space structure system tissue tissues tube wall organ organs bone bones joint joints
    muscle muscles nerve nerves vessel vessels tendon tendons ligament body
    """.split()
)
# Heads of those headings that are no condition ("foreign body", "other disorders").
_NOT_SITED = frozenset(
    "body bone disorders disorder level factor forms regions drugs complex joints involvement"
    " finger extension loss failure anomalies anomaly lesions deformities derangements"
    " injuries fractures".split()
)


_ORGAN_CONDITIONS = ("disease", "disorder", "cancer", "carcinoma", "tumor", "inflammation")


def build_sites() -> None:
    """Body sites and the conditions written with them ("fracture of ... radius"):
    "site<TAB>word" and "condition<TAB>word", from ICD-10-CM chapters M and S."""
    cm = _import_icd()
    sites: Counter[str] = Counter()
    conditions: Counter[str] = Counter()
    for code in cm.get_all_codes(with_dots=False):
        if code[0] not in "MS" or not cm.is_category_or_subcategory(code):
            continue
        text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", cm.get_description(code)).lower()
        clause = re.split(r",| with | without | due to | in diseases| associated| following", text)
        found = re.match(r"([a-z' -]+?) of (.*)", clause[0])
        if found is None:
            continue
        head, tail = found.groups()
        tail_words = re.findall(r"[a-z]+", tail)
        if tail_words:
            sites[tail_words[-1]] += 1  # "shaft of right femur": the site is the last word
        conditions[head.split()[-1]] += 1
    lines = [f"site\t{w}" for w, n in sites.items() if n >= 2 and w not in _NOT_SITES]
    lines += [
        f"condition\t{w}"
        for w, n in conditions.items()
        if n >= 3 and w.isalpha() and w not in _NOT_SITED
    ]
    # Conditions of organs, not only of limbs: "disease of the liver", "cancer of the breast".
    lines += [f"condition\t{w}" for w in _ORGAN_CONDITIONS]
    _write("body_sites.txt.gz", lines)


def _import_icd() -> Any:
    if importlib.util.find_spec("simple_icd_10_cm") is None:
        raise SystemExit("build_data: pip install simple-icd-10-cm first")
    import simple_icd_10_cm

    return simple_icd_10_cm


def main() -> None:
    """Regenerate every file in policies/data/."""
    DATA_DIR.mkdir(exist_ok=True)
    english = _english_words()
    build_icd10cm()
    build_conditions()
    build_sites()
    first = build_names(english)
    build_drugs(english, first)


if __name__ == "__main__":
    main()
