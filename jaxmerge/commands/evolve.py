"""`jaxmerge evolve CONFIG.yml --out DIR [--resume]`: the parameter-space search (and DFS / hybrid modes)."""
from __future__ import annotations

HELP = "evolve a merge recipe (population merged and scored in one compiled step per generation)"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="run config YAML (see configs/)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, model/, recipe.yml, plots/)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    from jaxmerge.distributed import add_arguments as distributed_arguments
    distributed_arguments(parser)


def run(args) -> int:
    import json
    from pathlib import Path

    from jaxmerge.distributed import initialize, is_primary
    from jaxmerge.evolve.config import load_config
    from jaxmerge.evolve.run import evolve
    from jaxmerge.runtime import enable_compilation_cache
    initialize(args.coordinator, args.num_processes, args.process_id)  # before any other JAX work
    enable_compilation_cache()
    best = evolve(load_config(args.config), Path(args.out), resume=args.resume, progress=not args.no_progress)
    if is_primary():
        print(json.dumps({"fitness": best["fitness"], "generation": best["generation"], "out": str(args.out)}))
    return 0
