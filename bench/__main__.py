"""``make bench``: the end-to-end benchmark, its baselines and the incremental run; writes bench/README.md.

    .venv/bin/python -m bench [--scale 10000 --scale 100000 --scale 1000000] [--loads-up-to N] [--no-readme]

Per scale: generate N synthetic people, start the three stand-ins (``standins.local``, as the demo
does), then run every stage in a subprocess of its own (``bench.stages``), timing it and reading its
peak RSS (``VmHWM``, reported by the process itself): extract, gate + conform, each LEA's Ed-Fi
load, each district's LinkIt load.
Baselines in the same run: DuckDB alone reading the same raw files, DuckDB alone copying the tables
the gate and the model write and parsing the Edu-V answers once (with the copy, the floor under those
two steps), and a plain ``requests`` loop
posting the same Ed-Fi records one by one. Then 1% of the SIS rows change and the pipeline runs
again (incremental). Loads above ``--loads-up-to`` people are skipped (they dominate the run time),
and the plain loop above ``--baseline-up-to`` (at a million people it alone would take most of an
hour, sending what the 100,000 run already compares).

Each scale's figures are kept in ``bench/results/<people>.json``; the README table is drawn from
every kept scale, so the 1M run can be redone alone without losing the smaller ones.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from staff_pipeline.config import load_organisations
from staff_pipeline.extract.sis_columns import map_headers
from staff_pipeline.generator import generate
from staff_pipeline.settings import REPO_ROOT, paths
from staff_pipeline.standins.local import local_apis

README = Path(__file__).with_name("README.md")
RESULTS = Path(__file__).with_name("results")
MARK = "<!-- bench:latest -->"


@dataclass
class Stage:
    """One measured subprocess."""

    name: str
    wall: float
    rss_mb: float
    counts: dict[str, Any] = field(default_factory=dict)
    requests: int = 0

    @property
    def work(self) -> float:
        """The time the stage itself took, measured inside its process (imports excluded)."""
        return float(self.counts.get("work_seconds", 0.0))


def run_stage(name: str, *args: str) -> Stage:
    """Run ``bench.stages <name> <args>`` and measure it; a failed stage stops the benchmark loudly."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.stages", name, *args],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=err,
            text=True,
        )
        _, status = os.waitpid(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if child.returncode:
            raise SystemExit(f"bench stage {name} {' '.join(args)} failed:\n{err.read()[-3000:]}")
        lines = out.read().strip().splitlines()
    counts = json.loads(lines[-1])
    return Stage(f"{name} {' '.join(args)}".strip(), wall, counts.pop("peak_rss_mb"), counts)


def _requests(standins: dict[str, Any]) -> int:
    return sum(len(s.received) for s in standins.values())


def _measured(standins: dict[str, Any], name: str, *args: str) -> Stage:
    before = _requests(standins)
    stage = run_stage(name, *args)
    stage.requests = _requests(standins) - before
    return stage


def change_one_percent(generated_inbox: Path, inbox: Path) -> int:
    """Copy each LEA's export with the email of every 100th row changed; returns rows changed.

    The copy keeps the export's encoding and delimiter, so the extract reads it as it read the original.
    """
    changed = 0
    for path in sorted(generated_inbox.glob("*/*.csv")):
        raw = path.read_bytes()
        encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "utf-8"
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            encoding, text = "cp1252", raw.decode("cp1252")
        first = text.split("\n", 1)[0]
        delimiter = max(",;\t|", key=first.count)
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        email = map_headers(rows[0]).canonical["email"]
        for row in rows[1::100]:
            if len(row) > email and row[email]:
                row[email] = f"changed.{row[email]}"
                changed += 1
        buffer = io.StringIO(newline="")
        csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
        target = inbox / path.parent.name / f"changed-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue().encode(encoding))
    return changed


FIRST_NIGHT = ("extract", "gate", "conform", "duckdb_copy", "duckdb_parse", "checksums")


def _first_nights(root: Path, generated: Any, standins: dict[str, Any], repeats: int) -> list[Stage]:
    """The first night's extract, gate and conform, with the copy baseline and the tables' checksums
    right after them, run ``repeats`` times, each in a fresh data directory: each trial's stages run
    back to back, so a ratio within one trial compares figures taken under the same machine
    conditions. The last trial's directory stays for the loads and the incremental run."""
    trials: list[Stage] = []
    for trial in range(1, repeats + 1):
        if trial > 1:
            shutil.rmtree(root / f"data-{trial - 1}", ignore_errors=True)
        os.environ["STAFF_DATA_DIR"] = str(root / f"data-{trial}")
        shutil.copytree(generated.inbox_dir, paths().inbox, dirs_exist_ok=True)
        for name in FIRST_NIGHT:
            stage = _measured(standins, name)
            stage.counts["trial"] = trial
            trials.append(stage)
    _same_output(trials)
    return trials


def _same_output(trials: list[Stage]) -> None:
    """Every trial ran the same night on the same inputs: different row counts or table checksums
    are a pipeline bug (a result that depends on request ids, timing or hash order), not noise."""
    seen: dict[str, dict[str, Any]] = {}
    for s in trials:
        counts = {k: v for k, v in s.counts.items() if k not in ("work_seconds", "trial")}
        if seen.setdefault(s.name, counts) != counts:
            trial = s.counts["trial"]
            raise SystemExit(f"bench: {s.name} trial {trial} gave {counts}, trial 1 {seen[s.name]}")


def _fastest(trials: list[Stage], name: str) -> Stage:
    """A stage's least disturbed trial: this machine's speed swings within minutes, and a disturbance
    only ever adds time."""
    return min((s for s in trials if s.name == name), key=lambda s: s.work)


def bench_scale(
    people: int, seed: int, with_loads: bool, with_baseline: bool, repeats: int
) -> dict[str, Any]:
    """Everything measured at one scale."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{people}-"))
    os.environ["BENCH_RUN_ID"] = "full"
    organisations = load_organisations()
    leas = [str(x) for x in organisations["lea_id"].unique()]
    districts = [str(x) for x in organisations["linkit_district"].unique()]
    result: dict[str, Any] = {"people": people, "stages": [], "baselines": [], "incremental": []}
    try:
        started = time.perf_counter()
        generated = generate(root / "generated", people, seed=seed)
        result["generate_wall"] = time.perf_counter() - started
        result["sis_rows"], result["eduv_employees"] = generated.sis_rows, generated.eduv_employees
        with local_apis(generated.eduv_dir) as apis:
            os.environ.update(apis.env)
            standins = {"eduv": apis.eduv, "edfi": apis.edfi, "linkit": apis.linkit}
            for standin in standins.values():
                standin.record_bodies = False
            stages = result["stages"]
            result["startup"] = run_stage("startup")
            result["trials"] = _first_nights(root, generated, standins, repeats)
            stages += [_fastest(result["trials"], name) for name in ("extract", "gate", "conform")]
            if with_loads:
                apis.register_wiseids()
                stages += [_measured(standins, "edfi", lea) for lea in leas]
                stages += [_measured(standins, "linkit", d) for d in districts]
            result["baselines"].append(run_stage("duckdb_raw", str(generated.root)))
            result["baselines"].append(_fastest(result["trials"], "duckdb_copy"))
            result["baselines"].append(_fastest(result["trials"], "duckdb_parse"))
            if with_loads and with_baseline:
                result["baselines"] += [_measured(standins, "naive_edfi", lea) for lea in leas]
            if with_loads:
                os.environ["BENCH_RUN_ID"] = "incremental"
                result["changed_rows"] = change_one_percent(generated.inbox_dir, paths().inbox)
                incremental = result["incremental"]
                incremental += [_measured(standins, name) for name in ("extract", "gate", "conform")]
                incremental += [_measured(standins, "edfi", lea) for lea in leas]
                incremental += [_measured(standins, "linkit", d) for d in districts]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    return result


def save(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    kept = {
        k: ([vars(s) for s in v] if k in _STAGE_LISTS else vars(v) if k == "startup" else v)
        for k, v in result.items()
    }
    (RESULTS / f"{result['people']}.json").write_text(json.dumps(kept, indent=1), encoding="utf-8")


def load_saved() -> list[dict[str, Any]]:
    """Every kept scale, smallest first."""
    results = []
    for path in RESULTS.glob("*.json"):
        kept = json.loads(path.read_text(encoding="utf-8"))
        for key in _STAGE_LISTS:
            kept[key] = [Stage(**s) for s in kept.get(key, [])]
        kept["startup"] = Stage(**kept["startup"])
        results.append(kept)
    return sorted(results, key=lambda r: r["people"])


# -- reporting ----------------------------------------------------------------------------------------
def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs (nproc), {memory:.1f} GiB RAM, "
        f"load average {load:.1f} at the end; Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__}, "
        f"{platform.system()} {platform.machine()}"
    )


def _group(stages: list[Stage], prefix: str) -> Stage:
    """Several partitions' stages as one line: summed wall and requests, the largest peak RSS."""
    picked = [s for s in stages if s.name.split()[0] == prefix]
    return Stage(
        f"{prefix} ({len(picked)} partitions)",
        sum(s.wall for s in picked),
        max((s.rss_mb for s in picked), default=0.0),
        counts={"work_seconds": sum(s.work for s in picked)},
        requests=sum(s.requests for s in picked),
    )


_STAGE_LISTS = ("stages", "baselines", "incremental", "trials")


def _lines(result: dict[str, Any]) -> list[Stage]:
    stages = result["stages"]
    out = [s for s in stages if s.name in ("extract", "gate", "conform")]
    return out + [
        g for g in (_group(stages, "edfi"), _group(stages, "linkit")) if not g.name.endswith("(0 partitions)")
    ]


def _by_trial(trials: list[Stage]) -> list[dict[str, Stage]]:
    """The first-night trials, each as its stages by name."""
    out: dict[int, dict[str, Stage]] = {}
    for s in trials:
        out.setdefault(s.counts["trial"], {})[s.name] = s
    return [out[n] for n in sorted(out)]


def _trials_note(result: dict[str, Any]) -> str:
    trials = len(_by_trial(result.get("trials", [])))
    return (
        f"; extract, gate, conform, the copy and the parse: the fastest of {trials} trials each"
        if trials > 1
        else ""
    )


def table(results: list[dict[str, Any]]) -> str:
    """The markdown tables: stages per scale with growth, baselines and ratios, incremental."""
    lines = [f"- {r['people']:,} people: {r['machine']}{_trials_note(r)}" for r in results] + [
        "",
        "| people | stage | process wall s | stage work s | peak RSS MB | requests |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for s in _lines(r):
            lines.append(
                f"| {r['people']:,} | {s.name} | {s.wall:.1f} | {s.work:.1f} | {s.rss_mb:.0f} | "
                f"{s.requests:,} |"
            )
        lines.append(
            f"| {r['people']:,} | (interpreter + imports of one stage process) | "
            f"{r['startup'].wall:.1f} | | {r['startup'].rss_mb:.0f} | |"
        )
    if len(results) > 1:
        lines += [
            "",
            "Growth (stage work time ratio between consecutive scales; linear would equal the people ratio)",
            "",
            "| from → to | people × | stage | work time × | peak RSS × |",
            "|---|---:|---|---:|---:|",
        ]
        for small, big in itertools.pairwise(results):
            by_name = {s.name.split(" (")[0]: s for s in _lines(small)}
            for s in _lines(big):
                base = by_name.get(s.name.split(" (")[0])
                if base and base.work:
                    scale = f"{small['people']:,} → {big['people']:,} | {big['people'] / small['people']:.0f}"
                    wall = s.work / base.work
                    growth = f"{wall:.1f} | {s.rss_mb / max(base.rss_mb, 1):.1f}"
                    lines.append(f"| {scale} | {s.name} | {growth} |")
    lines += [
        "",
        "Baselines (same raw files, same stand-in, same run)",
        "",
        "| people | measure | work s | peak RSS MB | ratio (stage work times) |",
        "|---:|---|---:|---:|---|",
    ]
    for r in results:
        extract = next(s for s in r["stages"] if s.name == "extract")
        raw = next(b for b in r["baselines"] if b.name.startswith("duckdb_raw"))
        lines.append(
            f"| {r['people']:,} | DuckDB alone reading the raw files | {raw.work:.1f} | {raw.rss_mb:.0f} | "
            f"extract stage takes {extract.work / max(raw.work, 0.001):.1f}× as long |"
        )
        gate, conform = (next(s for s in r["stages"] if s.name == n) for n in ("gate", "conform"))
        lines.append(
            f"| {r['people']:,} | the extract stage (the yardstick for the gate and the model) | "
            f"{extract.work:.1f} | {extract.rss_mb:.0f} | gate + conform take "
            f"{(gate.work + conform.work) / max(extract.work, 0.001):.2f}× the extract |"
        )
        ratios = [
            (by_name["gate"].work + by_name["conform"].work) / max(by_name["extract"].work, 0.001)
            for by_name in _by_trial(r.get("trials", []))
        ]
        if len(ratios) > 1:
            lines.append(
                f"| {r['people']:,} | each trial's own stages ({len(ratios)} trials, run back to back) | | | "
                f"gate + conform take {' / '.join(f'{x:.2f}×' for x in ratios)} the extract |"
            )
        copy = next((b for b in r["baselines"] if b.name.startswith("duckdb_copy")), None)
        if copy:
            lines.append(
                f"| {r['people']:,} | DuckDB alone copying the staged and conformed tables "
                f"({copy.counts['rows']:,} rows, no logic) | {copy.work:.1f} | {copy.rss_mb:.0f} | "
                f"gate + conform take {(gate.work + conform.work) / max(copy.work, 0.001):.2f}× the copy; "
                f"the copy takes {copy.work / max(extract.work, 0.001):.2f}× the extract |"
            )
        parse = next((b for b in r["baselines"] if b.name.startswith("duckdb_parse")), None)
        if copy and parse:
            floor = copy.work + parse.work
            lines.append(
                f"| {r['people']:,} | DuckDB alone parsing every Edu-V element once "
                f"({parse.counts['elements']:,}, json_transform, nothing else) | {parse.work:.1f} | "
                f"{parse.rss_mb:.0f} | with the copy, the floor under the two steps: {floor:.1f} s, "
                f"{floor / max(extract.work, 0.001):.2f}× the extract; their logic beyond it takes "
                f"{gate.work + conform.work - floor:.1f} s |"
            )
        naive = _group(r["baselines"], "naive_edfi")
        pipeline = _group(r["stages"], "edfi")
        if pipeline.work and naive.work:
            lines.append(
                f"| {r['people']:,} | plain requests loop, one POST per Ed-Fi record "
                f"({naive.requests:,} requests) | {naive.work:.1f} | {naive.rss_mb:.0f} | "
                f"pipeline Ed-Fi load is {naive.work / pipeline.work:.1f}× as fast |"
            )
    incremental = [r for r in results if r["incremental"]]
    if incremental:
        lines += [
            "",
            "Incremental: 1% of SIS rows changed (email), whole pipeline again",
            "",
            "| people | rows changed | stage | work s | requests | vs full load |",
            "|---:|---:|---|---:|---:|---|",
        ]
        for r in incremental:
            full = {s.name.split(" (")[0]: s for s in _lines(r)}
            for s in _lines({"stages": r["incremental"]}):
                base = full[s.name.split(" (")[0]]
                share = s.requests / max(base.requests, 1)
                time_share = s.work / max(base.work, 0.001)
                ratio = f"{time_share:.0%} of the time, {share:.1%} of the requests"
                lines.append(
                    f"| {r['people']:,} | {r['changed_rows']:,} | {s.name} | {s.work:.1f} | "
                    f"{s.requests:,} | {ratio} |"
                )
    return "\n".join(lines)


STAGE_HEAD = "Per-stage benchmarks ("
STAGE_BENCHES = ("generate", "extract_eduv", "extract_sis", "conform", "load_edfi", "load_linkit")


def stage_benches(people: int) -> str:
    """Run the stage owners' benchmarks (``bench/<stage>.py``) at ``people`` and keep what they print."""
    parts = [f"{STAGE_HEAD}`python -m bench.<stage> --people {people}`), as they print them"]
    for name in STAGE_BENCHES:
        print(f"bench: bench.{name} --people {people:,} ...", flush=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", "--people", str(people)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            parts.append(f"### bench.{name}\n\nfailed after {wall:.0f} s: `{last[:300]}`")
        else:
            parts.append(f"### bench.{name} ({wall:.0f} s)\n{done.stdout.strip()}")
    return "\n\n".join(parts)


def kept_stage_benches() -> str:
    """The per-stage section bench/README.md holds now: a run that skips those benchmarks keeps
    their latest figures rather than dropping them."""
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    return text[text.index(STAGE_HEAD) :].strip() if STAGE_HEAD in text else ""


def write_readme(text: str) -> None:
    """Replace everything after the marker in bench/README.md with the latest tables."""
    head = README.read_text(encoding="utf-8").split(MARK)[0] if README.exists() else "# Benchmarks\n\n"
    README.write_text(f"{head}{MARK}\n{text}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scale", type=int, action="append", help="people (repeat; default 10000, 100000 and 1000000)"
    )
    parser.add_argument(
        "--loads-up-to", type=int, default=1_000_000, help="skip the API loads above this size"
    )
    parser.add_argument(
        "--baseline-up-to", type=int, default=100_000, help="skip the plain requests loop above this size"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="trials of the first night's extract, gate, conform and copy"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--stage-people", type=int, default=10_000, help="size for the per-stage benchmarks")
    parser.add_argument("--no-stage-benches", action="store_true", help="skip the per-stage benchmarks")
    parser.add_argument("--no-readme", action="store_true", help="print only, leave bench/README.md alone")
    args = parser.parse_args(argv)
    results = []
    for people in args.scale or [10_000, 100_000, 1_000_000]:
        print(f"bench: {people:,} people ...", flush=True)
        result = bench_scale(
            people, args.seed, people <= args.loads_up_to, people <= args.baseline_up_to, args.repeats
        )
        results.append(result)
        if not args.no_readme:
            save(result)
    if not args.no_readme:
        results = load_saved()
    text = f"Latest runs, per scale:\n{table(results)}"
    stages = kept_stage_benches() if args.no_stage_benches else stage_benches(args.stage_people)
    if stages:
        text += "\n\n" + stages
    print(text)
    if not args.no_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
