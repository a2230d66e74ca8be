"""`jaxmerge demo [--vlm] [--out DIR] [--quick]`: evolved merges solve a composed target no source solves, on a CPU;
with --vlm, the paper's VLM experiment in miniature (jaxmerge.demo.vlm)."""
from __future__ import annotations

HELP = ("run the paper's experiment in miniature (sources, hand-made merges, PS, DFS, PS+DFS) and print the table; "
        "--vlm: its VLM experiment (sources, hand-made merges, PS)")


def add_arguments(parser) -> None:
    parser.add_argument("--vlm", action="store_true",
                        help="the VLM experiment: a VLM answering in E merged with a text model of J, scored on "
                             "image questions in J (word ROUGE-L)")
    parser.add_argument("--out", help="output directory: new, empty or an earlier demo's, never a directory of "
                                      "yours (default: ./jaxmerge-demo, with --vlm ./jaxmerge-vlm-demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller search budget on the same world and splits (CI: about 90 s, with --vlm 45 s)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (0 ships with the package)")
    parser.add_argument("--search-seed", type=int, default=0,
                        help="seed of every search (same world): reruns measure the spread over seeds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def table(results: dict):
    from rich.table import Table
    rows = results["rows"]
    columns = [k for k in rows[0] if k.endswith("_test")]
    metric = results["metric"]
    t = Table(title=f"jaxmerge demo: {metric} on held-out test splits (search used the target's dev split)")
    t.add_column("model")
    t.add_column("kind")
    for c in columns:
        t.add_column(c.removesuffix("_test"), justify="right")
    best = max(r["target_test"] for r in rows)
    for r in rows:
        cells = [f"{100 * r[c]:.1f}{'%' if metric == 'exact match' else ''}" for c in columns]
        if r["target_test"] == best:
            cells[0] = f"[bold green]{cells[0]}[/]"
        t.add_row(r["name"], r["kind"], *cells)
    return t


def run(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from jaxmerge.errors import expect
    from jaxmerge.runtime import enable_compilation_cache
    expect(args.seed >= 0, f"expected --seed >= 0, found {args.seed}")
    expect(args.search_seed >= 0, f"expected --search-seed >= 0, found {args.search_seed}")
    enable_compilation_cache()
    console = Console()
    if args.vlm:
        from jaxmerge.demo.vlm.pipeline import run_vlm_demo as run_demo
    else:
        from jaxmerge.demo.pipeline import run_demo
    out = Path(args.out or ("jaxmerge-vlm-demo" if args.vlm else "jaxmerge-demo"))
    results = run_demo(out, seed=args.seed, quick=args.quick, progress=not args.no_progress,
                       log=lambda msg: console.print(f"[bold]>[/] {msg}"), search_seed=args.search_seed)
    console.print(table(results))
    console.print(f"results: {out / 'results.json'}   winner: {out / 'winner'}   "
                  f"({results['seconds']:.0f} s)")
    console.print("what the searches found: " + "   ".join(results["plots"].values()))
    return 0
