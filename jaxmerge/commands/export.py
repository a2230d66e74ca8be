"""`jaxmerge export DIR --member N`: write member N of a several-objective run's front as a model of its own.

The member is taken from DIR/front.json (its unit-cube genes and merge key) and exported by the run's own
search space, rebuilt from DIR/run.json (the config as read, the directory its paths start from, the mode and
models): so it gets what the winner gets, a standard HF model with a model card, and recipe.yml that rebuilds
it. Written to DIR/members/N (or --out), with member.json (the member's front.json entry); an existing,
non-empty output is refused unless --overwrite.
"""
from __future__ import annotations

HELP = "export one member of a several-objective run's front (model/, recipe.yml, model card)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="the run directory of a jaxmerge evolve run with search.objectives")
    parser.add_argument("--member", type=int, required=True, help="the member's index in DIR/front.json")
    parser.add_argument("--out", help="output directory (default: DIR/members/N)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def member_of(run, index: int) -> dict:
    """front.json's member `index`, refused in one line when the run has no front or no such member."""
    from jaxmerge.errors import expect
    from jaxmerge.jsonfile import read_json_object
    expect((run / "front.json").is_file(), f"expected {run}/front.json (a run with search.objectives), found none")
    members = read_json_object(run / "front.json", "a front record (front.json)").get("members", [])
    expect(0 <= index < len(members), f"expected --member in 0..{len(members) - 1} (the front of {run}), found "
                                      f"{index}")
    return members[index]


def card_record(run, member: dict, index: int) -> dict:
    """best.json with the member's own values: what the space's export puts in the model card."""
    import json
    best = json.loads((run / "best.json").read_text())
    start = best["baselines"]["start"]
    fitness = member.get("fitness")
    return {**best, "status": f"front member {index}", "fitness": fitness, "genes": member["genes"],
            "raw": member["raw"], "merge_key": member["merge_key"],
            "front_member": {"index": index, "objectives": member["objectives"]},
            "improved_on_start": fitness is not None and (start is None or fitness > start)}


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from jaxmerge.config import parse_config
    from jaxmerge.errors import expect
    from jaxmerge.evolve.rundir import read_run
    from jaxmerge.modes import builders, run_mesh
    from jaxmerge.runtime import enable_compilation_cache
    run_dir = Path(args.run)
    record = read_run(run_dir)
    member = member_of(run_dir, args.member)
    out = Path(args.out) if args.out else run_dir / "members" / str(args.member)
    expect(args.overwrite or not out.exists() or not any(out.iterdir()),
           f"expected a new or empty output directory, found {out} holding files (--overwrite replaces it)")
    expect("root" in record and "mode" in record, f"expected run.json in {run_dir} to name its root and mode, "
                                                  "found neither (a run of an older jaxmerge?)")
    cfg = parse_config(record["config"], Path(record["root"]), str(run_dir / "run.json"))
    enable_compilation_cache()
    space = builders()[record["mode"]](cfg, run_mesh(cfg), tuple(record["models"]))
    out.mkdir(parents=True, exist_ok=True)
    extra = space.export(np.asarray(member["raw"], np.float32), np.asarray(member["merge_key"], np.uint32), out,
                         card_record(run_dir, member, args.member))
    (out / "member.json").write_text(json.dumps({**member, **extra}, indent=2))
    print(json.dumps({"member": args.member, "out": str(out), "objectives": member["objectives"]}))
    return 0
