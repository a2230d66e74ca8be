"""`jaxmerge merge RECIPE.yml OUT_DIR`: run a mergekit recipe with jaxmerge's JAX merge methods.

Options follow mergekit-yaml's where it has them (--out-shard-size, --copy-tokenizer/--no-copy-tokenizer,
--write-model-card/--no-write-model-card, same defaults). Warnings (an ignored parameter, a path found beside the
recipe, a count one element off) are one line each on stderr, printed when the merge has been written; a refused
merge prints its one error line only.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

HELP = "merge models from a mergekit YAML recipe into a Hugging Face directory"


def shard_size(text: str) -> int:
    """mergekit's size syntax: an integer, or a number with k / m / b (thousands, millions, billions) of bytes."""
    units = {"k": 10**3, "m": 10**6, "b": 10**9}
    value = text.strip()
    try:
        return int(value[:-1]) * units[value[-1].lower()] if value[-1:].lower() in units else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 5B, 500M or 1000000, found {text!r}") from None


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="mergekit recipe YAML (models / slices, merge_method, parameters, ...)")
    parser.add_argument("out_dir", help="output directory (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the DARE / DELLA masks (default 0; refused when the recipe carries a "
                             "'# jaxmerge:' merge_key, which rebuilds an evolved winner's masks)")
    parser.add_argument("--math-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="compute the merge in this dtype (default: the recipe's dtype, else the sources', "
                             "as mergekit does); float32 gives more exact merges of 16-bit recipes")
    parser.add_argument("--out-shard-size", type=shard_size, default=shard_size("5B"),
                        help="bytes per output shard, mergekit's syntax (default 5B; 0: one file)")
    parser.add_argument("--copy-tokenizer", action=argparse.BooleanOptionalAction, default=True,
                        help="copy the tokenizer to the output (default: yes)")
    parser.add_argument("--write-model-card", action=argparse.BooleanOptionalAction, default=True,
                        help="write README.md and mergekit_config.yml (default: yes)")
    parser.add_argument("--intermediate-dir", default=None,
                        help="multi-document recipes (mergekit-multi's): write each named document's result to "
                             "DIR/NAME (default: keep them in memory)")
    parser.add_argument("--lazy", action=argparse.BooleanOptionalAction, default=True,
                        help="with --intermediate-dir, read a document's result that exists there instead of "
                             "merging it again (default: yes, as mergekit-multi)")
    parser.add_argument("--allow-crimes", action="store_true",
                        help="merge models of different families when their tensors and math agree (as "
                             "mergekit's --allow-crimes; families that differ in any switch stay refused)")


@contextlib.contextmanager
def one_line_warnings():
    """Collect the recipe warnings of a run; if it succeeds, show each once as `jaxmerge merge: warning: ...`
    (other warnings are shown as Python shows them)."""
    from jaxmerge.merge.recipe import RecipeWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecipeWarning)
        yield
    for w in caught:
        if not issubclass(w.category, RecipeWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for text in dict.fromkeys(str(w.message).splitlines()[0] for w in caught if issubclass(w.category, RecipeWarning)):
        print(f"jaxmerge merge: warning: {text}", file=sys.stderr)


def run(args) -> int:
    with one_line_warnings():
        return _run(args)


def _run(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from jaxmerge.merge.build import Options, merge_recipe, referenced
    from jaxmerge.errors import expect
    from jaxmerge.merge.multi import is_chain
    from jaxmerge.merge.recipe import read_recipe
    from jaxmerge.runtime import enable_compilation_cache

    enable_compilation_cache(default_min_seconds=0)  # every per-shape program: the next merge of them reuses it
    options = Options(seed=args.seed, math_dtype=args.math_dtype, out_shard_size=args.out_shard_size,
                      copy_tokenizer=args.copy_tokenizer, write_model_card=args.write_model_card,
                      overwrite=args.overwrite, allow_crimes=args.allow_crimes)
    if is_chain(args.recipe):
        return _run_chain(args, options)
    expect(args.intermediate_dir is None, "--intermediate-dir: expected a multi-document recipe (documents with a "
                                          "name, separated by ---), found a single recipe")
    recipe = read_recipe(args.recipe)
    steps = len(referenced(recipe)) + 2
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"merge ({recipe.method})", total=steps)

        def on_step(step: str) -> None:
            progress.update(task, description=step, advance=1)
        out = merge_recipe(recipe, args.out_dir, options, on_step=on_step)
        progress.update(task, completed=steps)
    print(f"wrote {out} ({recipe.method})")
    return 0


def _run_chain(args, options) -> int:
    """A multi-document recipe (jaxmerge.merge.multi): every document checked first, then merged in order."""
    from jaxmerge.merge.multi import read_chain, run_chain
    docs = read_chain(args.recipe)
    out = run_chain(docs, args.out_dir, options, intermediate_dir=args.intermediate_dir, lazy=args.lazy)
    print(f"wrote {out} ({len(docs)} documents; last: {docs[-1].recipe.method})")
    return 0
