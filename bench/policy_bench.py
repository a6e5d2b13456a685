"""Policy engine benchmark: extracted text per CPU second, and latency per message.

    python bench/policy_bench.py [--quick] [--no-presidio] [--json FILE]
    python bench/policy_bench.py --handoff 2000

Three message classes, single process, one core:
  ~5 KB    real messages of the labelled corpus (tests/policies/corpus/)
  ~100 KB  a letter, lab report PDF, patient CSV and spreadsheet built with the
           corpus generator (tools/make_corpus.py), different data each message
  ~5 MB    the same recipe, scaled up (a large export with its cover letter)

For each class: MB/s of extracted text per CPU-second of the whole pipeline
(`policies.engine.evaluate`: MIME walk, attachment extraction, detectors,
verdict, rules), and wall-clock p50/p99 per message. Goals: >= 2 MB/s per
core, p99 < 100 ms at 100 KB.

When presidio-analyzer is installed, its pattern recognizers (the ones that
need neither a spaCy model nor the network) run over the very same extracted
texts, and the ratio to Sealgate's detection stage on those texts is printed.
Presidio's NLP recognizers need a spaCy model from a model hub, which this
benchmark does not download. Needs openpyxl and python-docx (corpus generator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from email.policy import SMTP
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import make_corpus as mc  # type: ignore[import-not-found, unused-ignore]  # noqa: E402 - via sys.path

from policies.engine import decide, evaluate  # noqa: E402
from policies.extract import Extraction, extract  # noqa: E402
from policies.rules import Ruleset  # noqa: E402

CORPUS = REPO / "tests" / "policies" / "corpus"
SENDER = "frontdesk@riverside-fm.example"
RCPTS = ("referrals@lakeviewcardio.example",)


# --- messages -----------------------------------------------------------------------------


def small_messages() -> list[bytes]:
    """Corpus messages of about 5 KB (3-8 KB)."""
    out = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    return [raw for raw in out if 3_000 <= len(raw) <= 8_000]


def built_message(target: int, seed: int) -> bytes:
    """A clinic-to-partner message of about `target` bytes, made with the corpus generator.

    The seed also picks the mix, as mail varies: documents (referral letter as
    DOCX, lab reports as PDF), tables (patient CSV and spreadsheet), or both.
    """
    raw = _compose(seed, target / 100)
    # Part sizes do not scale exactly with row and page counts: correct once.
    return _compose(seed, target / 100 * target / len(raw))


def _compose(seed: int, units: float) -> bytes:
    g = mc.Gen(seed)
    clinic = mc.CLINICS[0]
    doc, to_doc = g.clinician(), g.clinician()
    letter = mc.referral_letter(g, g.person(), doc, to_doc, clinic)
    mix = ("documents", "tables", "both")[seed % 3]
    # Pages of lab reports and table rows per unit (about 100 bytes on the wire).
    pages, csv_rows, xlsx_rows = {
        "documents": (0.1, 0.0, 0.0),
        "tables": (0.0, 0.8, 0.9),
        "both": (0.035, 0.3, 0.3),
    }[mix]
    atts = []
    if pages:
        lab = [mc.lab_report_lines(g, g.person(), doc) for _ in range(max(1, int(units * pages)))]
        atts.append(mc.Att("lab_reports.pdf", mc.pdf(lab, g.rng, title="Labs"), "application/pdf"))
        atts.append(
            mc.Att("referral.docx", mc.docx(mc.Doc("Referral", letter), g.rng), mc.DOCX_TYPE)
        )
    if csv_rows:
        rows = mc.patient_rows(g, max(5, int(units * csv_rows)), health=True)
        atts.append(mc.Att("patients.csv", mc.csv_bytes(rows).decode(), "text/csv"))
    if xlsx_rows:
        rows = mc.patient_rows(g, max(5, int(units * xlsx_rows)), health=True)
        atts.append(mc.Att("followup.xlsx", mc.xlsx([("Patients", rows)], g.rng), mc.XLSX_TYPE))
    msg = mc.build(
        g,
        sender=mc.addr(doc.name, mc.mailbox(doc.name, clinic.domain)),
        to=[mc.mailbox(to_doc.name, mc.CLINICS[1].domain)],
        subject="Records for transfer of care",
        text="\n\n".join(letter),
        atts=atts,
    )
    mc.finalise(g, msg)
    return bytes(msg.as_bytes(policy=SMTP))


# --- measuring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """Figures for one message class."""

    name: str
    messages: int
    runs: int
    mean_size: float  # bytes on the wire
    text_mb: float  # extracted text per message, MB (UTF-8)
    mb_per_cpu_s: float  # extracted text per CPU-second of the whole pipeline
    p50_ms: float
    p99_ms: float
    max_ms: float
    # Per message (in order): MB/s of its extracted text per CPU-second, all runs.
    mb_per_cpu_s_each: tuple[float, ...] = ()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def text_bytes(x: Extraction) -> int:
    """Bytes of extracted text (UTF-8), the unit of the throughput goal."""
    return sum(len(s.text.encode("utf-8")) for s in x.segments)


def measure(name: str, messages: Sequence[bytes], runs: int, ruleset: Ruleset) -> Result:
    """Run the whole pipeline `runs` times over every message."""
    sizes = [text_bytes(extract(raw)) for raw in messages]
    evaluate(messages[0], SENDER, RCPTS, ruleset)  # warm caches (lexicons, regexes)
    latencies: list[float] = []
    each = [0.0] * len(messages)
    for _ in range(runs):
        for i, raw in enumerate(messages):
            c0, t0 = time.process_time(), time.perf_counter()
            evaluate(raw, SENDER, RCPTS, ruleset)
            latencies.append(time.perf_counter() - t0)
            each[i] += time.process_time() - c0
    cpu = sum(each)
    total_text = sum(sizes) * runs
    return Result(
        name=name,
        messages=len(messages),
        runs=runs,
        mean_size=statistics.fmean(len(m) for m in messages),
        text_mb=statistics.fmean(sizes) / 1e6,
        mb_per_cpu_s=total_text / 1e6 / cpu,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        max_ms=max(latencies) * 1e3,
        mb_per_cpu_s_each=tuple(size * runs / 1e6 / c for size, c in zip(sizes, each, strict=True)),
    )


MIXES = ("documents", "tables", "both")


def cpu_by_mix(messages: Sequence[bytes], ruleset: Ruleset, runs: int) -> dict[str, float]:
    """Worst CPU milliseconds per message of each mix (best of `runs`, so load does not count).

    The messages are those of `built_message`, whose seed picks the mix: seed % 3.
    """
    worst: dict[str, float] = {}
    for seed, raw in enumerate(messages):
        best = min(cpu_seconds(partial(evaluate, raw, SENDER, RCPTS, ruleset), 1)
                   for _ in range(runs))  # fmt: skip
        mix = MIXES[seed % 3]
        worst[mix] = max(worst.get(mix, 0.0), best * 1e3)
    return worst


def cpu_seconds(work: Callable[[], object], runs: int) -> float:
    """CPU time of `runs` calls."""
    c0 = time.process_time()
    for _ in range(runs):
        work()
    return time.process_time() - c0


# --- Presidio ---------------------------------------------------------------------------------

# Pattern recognizers for the identifiers a US clinic's mail carries. EmailRecognizer
# is left out: it validates domains with tldextract, which downloads the public
# suffix list on first use.
_PRESIDIO_RECOGNIZERS = (
    "UsSsnRecognizer", "UsItinRecognizer", "UsMbiRecognizer", "UsNpiRecognizer",
    "UsHealthInsuranceMemberIdRecognizer", "UsLicenseRecognizer", "UsPassportRecognizer",
    "UsBankRecognizer", "AbaRoutingRecognizer", "MedicalLicenseRecognizer",
    "CreditCardRecognizer", "DateRecognizer", "PhoneRecognizer", "IpRecognizer",
    "UrlRecognizer", "IbanRecognizer",
)  # fmt: skip


def presidio_scanner() -> tuple[Callable[[Sequence[str]], int], list[str]] | str:
    """A function running Presidio's pattern recognizers over texts, or why there is none."""
    try:
        from presidio_analyzer import predefined_recognizers as pr
    except ImportError:
        return "presidio-analyzer is not installed (pip install presidio-analyzer)"
    recognizers = []
    for name in _PRESIDIO_RECOGNIZERS:
        cls = getattr(pr, name, None)
        if cls is not None:
            recognizers.append(cls())

    def scan(texts: Sequence[str]) -> int:
        hits = 0
        for text in texts:
            for r in recognizers:
                # nlp_artifacts=None: pattern matching and checksums only, no spaCy model.
                hits += len(r.analyze(text, r.supported_entities, None))
        return hits

    return scan, [type(r).__name__ for r in recognizers]


@dataclass(frozen=True)
class Comparison:
    """Detection-stage throughput on identical extracted texts."""

    name: str
    sealgate_mb_s: float
    presidio_mb_s: float

    @property
    def ratio(self) -> float:
        """How many times faster Sealgate's detection stage is."""
        return self.sealgate_mb_s / self.presidio_mb_s


def compare(
    name: str,
    messages: Sequence[bytes],
    ruleset: Ruleset,
    presidio: Callable[[Sequence[str]], int],
    budget: int,
) -> Comparison:
    """Sealgate's detectors + verdict + rules against Presidio's recognizers, same texts.

    Only the first `budget` bytes of extracted text take part: Presidio's phone
    matcher alone needs minutes for one large message.
    """
    extractions = []
    left = budget
    for raw in messages:
        x = extract(raw)
        kept = []
        for seg in x.segments:
            if left <= 0:
                break
            kept.append(seg)
            left -= len(seg.text.encode("utf-8"))
        extractions.append(dataclasses.replace(x, segments=tuple(kept), unscannable=()))
        if left <= 0:
            break
    texts = [[s.text for s in x.segments] for x in extractions]
    mb = sum(text_bytes(x) for x in extractions) / 1e6

    def ours() -> None:
        for x in extractions:
            decide(x, SENDER, RCPTS, ruleset)

    def theirs() -> None:
        for t in texts:
            presidio(t)

    return Comparison(name, mb / cpu_seconds(ours, 1), mb / cpu_seconds(theirs, 1))


# --- the gateway's hand-off to its scanning processes ------------------------------------------


def handoff(messages: int) -> list[tuple[str, float, float]]:
    """CPU ms of the gateway's own process per scan, and wall ms per scan, with 2 workers.

    The gateway hands every message to a scanning process (gateway.policy.Scanner)
    and waits for the decision on its event loop: this is what that costs the
    process that also serves SMTP, on a small message (the relay benchmark's).
    """
    import asyncio

    from gateway.config import PolicyConfig
    from gateway.policy import Scanner, start_scanner

    sys.path.insert(0, str(REPO / "bench"))
    from smtpload import make_message  # type: ignore[import-not-found, unused-ignore]

    raw: bytes = make_message(4096, 1, SENDER, RCPTS[0])
    out: list[tuple[str, float, float]] = []

    async def one(scanner: Scanner, gate: asyncio.Semaphore) -> None:
        async with gate:
            await scanner.classify(raw, SENDER, RCPTS)

    async def run() -> None:
        scanner = await start_scanner(PolicyConfig(workers=2))
        try:
            await asyncio.gather(*(one(scanner, asyncio.Semaphore(1)) for _ in range(50)))
            for label, in_flight in (("one at a time", 1), ("8 in flight", 8)):
                gate = asyncio.Semaphore(in_flight)
                c0, t0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(one(scanner, gate) for _ in range(messages)))
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                out.append((label, cpu / messages * 1e3, wall / messages * 1e3))
        finally:
            await scanner.close()

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())
    return out


# --- report -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Build the messages, measure, print (and optionally save) the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer messages and runs")
    ap.add_argument("--no-presidio", action="store_true", help="skip the Presidio comparison")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument(
        "--handoff",
        type=int,
        metavar="N",
        help="only measure the gateway's hand-off of N small messages to its scanning processes",
    )
    args = ap.parse_args(argv)
    if args.handoff:
        print("Hand-off to the scanning processes (2 workers, 4 KB message)")
        print(f"{'':<15}{'gateway CPU ms/msg':>20}{'wall ms/msg':>13}")
        for label, cpu, wall in handoff(args.handoff):
            print(f"{label:<15}{cpu:>20.3f}{wall:>13.3f}")
        return 0
    # Figures appear as they are measured, also when the output goes to a file.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    ruleset = Ruleset.default()
    rng = random.Random(7)
    small = small_messages()
    if args.quick:
        small = rng.sample(small, min(40, len(small)))
    medium = [built_message(100_000, seed) for seed in range(6 if args.quick else 24)]
    large = [built_message(5_000_000, 100 + seed) for seed in range(1 if args.quick else 3)]
    classes = (
        ("~5 KB", small, 2 if args.quick else 10),
        ("~100 KB", medium, 2 if args.quick else 4),
        ("~5 MB", large, 1),
    )
    results = [measure(name, msgs, runs, ruleset) for name, msgs, runs in classes]
    print(f"Policy engine, whole pipeline, one core (Python {sys.version.split()[0]})")
    print(
        f"{'class':<9}{'msgs':>5}{'runs':>5}{'size':>11}{'text/msg':>10}{'MB/s/core':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for r in results:
        print(
            f"{r.name:<9}{r.messages:>5}{r.runs:>5}{r.mean_size / 1e3:>9.1f}KB"
            f"{r.text_mb * 1e3:>8.1f}KB{r.mb_per_cpu_s:>11.2f}{r.p50_ms:>9.1f}"
            f"{r.p99_ms:>9.1f}{r.max_ms:>9.1f}"
        )
    total_text = sum(r.text_mb * r.messages * r.runs for r in results)
    total_cpu = sum(r.text_mb * r.messages * r.runs / r.mb_per_cpu_s for r in results)
    print(f"overall: {total_text / total_cpu:.2f} MB/s of extracted text per core")
    mixes = cpu_by_mix(medium, ruleset, 3)
    print("~100 KB, worst CPU ms per message by mix (least of 3 runs each): " + ", ".join(
        f"{mix} {ms:.1f}" for mix, ms in mixes.items()))  # fmt: skip
    # The large messages were built with seeds 100, 101...: the mix is seed % 3.
    large_each = results[-1].mb_per_cpu_s_each
    print("~5 MB, MB/s per core by mix: " + ", ".join(
        f"{MIXES[(100 + i) % 3]} {v:.2f}" for i, v in enumerate(large_each)))  # fmt: skip
    report: dict[str, Any] = {"results": [asdict(r) for r in results], "cpu_ms_by_mix": mixes}
    if not args.no_presidio:
        scanner = presidio_scanner()
        if isinstance(scanner, str):
            print(f"\nPresidio: not measured: {scanner}")
            report["presidio"] = scanner
        else:
            presidio, names = scanner
            print(f"\nDetection stage on identical extracted texts (Presidio: {len(names)} pattern")
            print("recognizers, no NLP model; Sealgate: detectors + verdict + rules)")
            print(f"{'class':<9}{'Sealgate MB/s':>15}{'Presidio MB/s':>15}{'ratio':>8}")
            comps = [
                compare(name, msgs, ruleset, presidio, 200_000 if args.quick else 1_000_000)
                for name, msgs, _ in classes
            ]
            for c in comps:
                print(
                    f"{c.name:<9}{c.sealgate_mb_s:>15.2f}{c.presidio_mb_s:>15.2f}{c.ratio:>7.1f}x"
                )
            report["presidio"] = {"recognizers": names, "comparison": [asdict(c) for c in comps]}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
