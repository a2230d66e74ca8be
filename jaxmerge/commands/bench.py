"""`jaxmerge bench [--quick] [--out DIR] [--record]`: run every benchmark in the repository's benchmarks/.

The benchmarks are not part of the installed package (they compare against torch/mergekit, the test extra, and
are dev tooling), so this command finds them next to the package: with `pip install -e .` (the supported way to
work on jaxmerge) `jaxmerge/` sits in the checkout, and `benchmarks/` beside it. A wheel install has no
benchmarks/ and gets a one-line error saying so, rather than an import traceback.
"""
from __future__ import annotations

HELP = "run the benchmarks (jaxmerge vs mergekit/transformers) and write results.json + a Markdown table"


def add_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (about 1-3 min; CI)")
    parser.add_argument("--out", default="bench-results", help="output directory (default: bench-results)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument("--record", action="store_true",
                        help="also write the table and sections into benchmarks/RESULTS.md (plots into "
                             "benchmarks/plots/)")


def locate_benchmarks():
    """Import the `benchmarks` package from the checkout that holds this jaxmerge."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    import jaxmerge
    from jaxmerge.errors import expect
    root = Path(jaxmerge.__file__).resolve().parent.parent
    expect((root / "benchmarks" / "__init__.py").is_file(),
           f"expected a source checkout with benchmarks/ next to jaxmerge/ (pip install -e .), found none in {root}")
    for extra in ("torch", "mergekit"):
        expect(importlib.util.find_spec(extra) is not None,
               f"expected {extra} (the test extra: pip install -e '.[test]') for the benchmarks' anchors, found none")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("benchmarks")


def record(benchmarks, out, results: list[dict], page: str) -> None:
    """Put the latest table on top of benchmarks/RESULTS.md and replace this suite's sections; plots beside."""
    import shutil

    from benchmarks.common import write_section
    plots = benchmarks.RESULTS_PAGE.parent / "plots"
    plots.mkdir(exist_ok=True)
    for image in out.glob("*.png"):
        shutil.copy(image, plots / image.name)
        page = page.replace(f"]({image.name})", f"](plots/{image.name})")
    head, *sections = page.split("\n## ")
    top = head.split("\n", 2)[2] if head.startswith("# ") else head
    write_section(benchmarks.RESULTS_PAGE, benchmarks.TABLE_TITLE, top, first=True)
    for section in sections:
        title, body = section.split("\n", 1)
        write_section(benchmarks.RESULTS_PAGE, title.strip(), body)


def run(args) -> int:
    from pathlib import Path

    from jaxmerge.atomic import atomic_dir
    benchmarks = locate_benchmarks()
    target = Path(args.out)
    with atomic_dir(target, overwrite=args.overwrite) as tmp:
        results, page = benchmarks.run_suite(args.quick, tmp)
    if args.record:
        record(benchmarks, target.absolute(), results, page)
    print(benchmarks.table(results))
    missed = [r["name"] for r in results if r["met"] is False]
    print(f"wrote {target / 'results.json'}; goals met: {sum(r['met'] is True for r in results)}, "
          f"missed: {len(missed)}")
    return 0
