"""`jaxmerge merge RECIPE.yml OUT_DIR`: run a mergekit recipe with jaxmerge's JAX merge methods."""
from __future__ import annotations

HELP = "merge models from a mergekit YAML recipe into a Hugging Face directory"


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="mergekit recipe YAML (models / slices, merge_method, parameters, ...)")
    parser.add_argument("out_dir", help="output directory (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed for random methods (DARE, DELLA)")


def run(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxmerge.merge.build import merge_recipe, referenced
    from jaxmerge.merge.recipe import read_recipe
    from jaxmerge.runtime import enable_compilation_cache

    enable_compilation_cache()  # the merge compiles per architecture: a repeat merge of the same shapes reuses it
    recipe = read_recipe(args.recipe)
    steps = len(referenced(recipe)) + 2
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"merge ({recipe.method})", total=steps)

        def on_step(step: str) -> None:
            progress.update(task, description=step, advance=1)
        out = merge_recipe(recipe, args.out_dir, seed=args.seed, overwrite=args.overwrite, on_step=on_step)
        progress.update(task, completed=steps)
    print(f"wrote {out} ({recipe.method})")
    return 0
