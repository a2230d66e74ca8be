"""jaxmerge's benchmarks: each module measures jaxmerge against an anchor (mergekit, transformers) in one run.

A benchmark module in SUITE exposes `measure(quick: bool, out: Path) -> (results, markdown)`: rows for
results.json (see common.result) and its section of the results page; it writes any plots into `out`.
`run_suite` runs them all (`jaxmerge bench`, or `python -m benchmarks` from the repository root). The package
lives outside `jaxmerge/` on purpose: its anchors (torch, mergekit) are the test extra, not runtime dependencies.
A benchmark run as a program (`python -m benchmarks[.NAME]`) gets the `jaxmerge` program's memory settings
(jaxmerge.hugepages) before anything else happens; imported by another program (pytest) it changes nothing.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

from jaxmerge.hugepages import with_huge_pages

_argv = sys.orig_argv
if "-m" in _argv[:-1] and _argv[_argv.index("-m") + 1].split(".")[0] == "benchmarks":  # python -m benchmarks[.NAME]
    with_huge_pages()

SUITE = (  # (section title, module): explicit, one line per benchmark
    ("evolution throughput (benchmarks/evolve_throughput.py)", "benchmarks.evolve_throughput"),
    ("scaling curves (benchmarks/scaling.py)", "benchmarks.scaling"),
    ("dfs: path forward cost (benchmarks/dfs_speed.py)", "benchmarks.dfs_speed"),
    ("fitness: greedy decode speed (benchmarks/decode_speed.py)", "benchmarks.decode_speed"),
    ("merge speed vs mergekit (benchmarks/merge_speed.py)", "benchmarks.merge_speed"),
    ("scale-out: loading at scale, peak host RSS (benchmarks/load_rss.py)", "benchmarks.load_rss"),
    ("families: forward vs transformers, MoE grouped vs dense, sliding-window memory (benchmarks/families.py)",
     "benchmarks.families"),
)
RESULTS_PAGE = Path(__file__).with_name("RESULTS.md")
TABLE_TITLE = "jaxmerge bench: latest table"


def table(results: list[dict]) -> str:
    """The results as one Markdown table, goals and whether they were met said plainly."""
    def num(x):
        return "" if x is None else f"{x:.4g}"
    rows = ["| benchmark | value | unit | baseline | ratio | goal | met | spread |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        spread = "" if r.get("noise") is None else f"{100 * r['noise']:.0f} %"
        rows.append(f"| {r['name']} | {num(r['value'])} | {r['unit']} | {num(r['baseline'])} | {num(r['ratio'])} | "
                    f"{r['goal'] or ''} | {met} | {spread} |")
    return "\n".join(rows)


def run_suite(quick: bool, out: Path, log=print) -> tuple[list[dict], str]:
    """Run every benchmark, writing results.json, results.md and plots into `out`; (results, results.md)."""
    from benchmarks.common import machine, machine_text
    before = machine()
    results, sections = [], []
    for title, module_name in SUITE:
        start = time.perf_counter()
        log(f"bench: {title} ...")
        rows, body = importlib.import_module(module_name).measure(quick, out)
        log(f"bench: {title} done in {time.perf_counter() - start:.0f} s")
        results += rows
        sections.append(f"## {title}\n\n{body.strip()}\n")
    after = machine()
    page = (f"# jaxmerge bench{' --quick' if quick else ''}\n\nMachine: {machine_text(before)}; load average at "
            f"the end {after['load_1_5_15'][0]}.\n\n{table(results)}\n\n" + "\n".join(sections))
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "machine.json").write_text(json.dumps({"start": before, "end": after}, indent=1) + "\n")
    (out / "results.md").write_text(page)
    return results, page
