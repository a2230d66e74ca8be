"""`jaxmerge evolve CONFIG.yml --out DIR [--resume]`: the parameter-space search (and DFS / hybrid modes)."""
from __future__ import annotations

HELP = "evolve a merge recipe (population merged and scored in one compiled step per generation)"


def add_arguments(parser) -> None:
    parser.add_argument("config", help="run config YAML (see configs/)")
    parser.add_argument("--out", required=True, help="run directory (checkpoints, model/, recipe.yml, plots/)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--generations", type=int, help="with --resume: run to this many generations in all "
                                                        "(extends a finished run; mode ps or dfs)")
    parser.add_argument("--allow-changed-inputs", action="store_true",
                        help="with --resume: continue even though the config or a source changed since the start")
    parser.add_argument("--no-progress", action="store_true", help="one log line per generation, no progress bar")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard event files to OUT/tensorboard (needs jaxmerge[tensorboard])")
    from jaxmerge.distributed import add_arguments as distributed_arguments
    distributed_arguments(parser)


def run(args) -> int:
    import json
    from pathlib import Path

    from jaxmerge.config import load_config
    from jaxmerge.distributed import initialize, is_primary
    from jaxmerge.errors import expect
    from jaxmerge.modes import evolve
    from jaxmerge.runtime import enable_compilation_cache
    expect(args.generations is None or (args.resume and 1 <= args.generations <= 10**6),
           f"expected --generations N (1 <= N <= 1000000) together with --resume, found {args.generations}"
           + ("" if args.resume else " without --resume"))
    cfg = load_config(args.config)
    expect(args.generations is None or cfg.mode != "hybrid", "expected --generations with mode ps or dfs, found "
           "mode hybrid: set search.generations / dfs.generations in the config, then --resume")
    initialize(args.coordinator, args.num_processes, args.process_id)  # before any other JAX work
    enable_compilation_cache()
    best = evolve(cfg, Path(args.out), resume=args.resume, progress=not args.no_progress,
                  generations=args.generations, allow_changed=args.allow_changed_inputs, tensorboard=args.tensorboard)
    if is_primary():
        print(json.dumps({"fitness": best["fitness"], "generation": best["generation"], "out": str(args.out)}))
    return 0
