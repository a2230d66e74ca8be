"""The last step of `jaxmerge merge`: write weights (each merged as the writer reaches it, a non-finite one refused),
config, tokenizer, model card and mergekit_config.yml into one atomic directory (all of it appears, or nothing).

The card says how to rebuild the output: `jaxmerge merge mergekit_config.yml OUT` with the same options
(mergekit_config.yml is the recipe's own text, its `# jaxmerge:` line included), and `mergekit-yaml` for the
deterministic methods.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from jaxmerge.card import write_card
from jaxmerge.io import Model, save
from jaxmerge.merge.methods import METHODS
from jaxmerge.merge.recipe import Recipe
from jaxmerge.vlm.checkpoint import save_vlm

RANDOM = frozenset({"dare_ties", "dare_linear", "della", "della_linear"})
ONE_FILE = 2**62  # --out-shard-size <= 0: mergekit writes one file


def rebuild_text(recipe: Recipe, options) -> str:
    """How to make this output again, as a Markdown paragraph."""
    flags = "".join([f" --seed {options.seed}" if options.seed is not None else "",
                     f" --math-dtype {options.math_dtype}" if options.math_dtype else ""])
    text = f"```sh\njaxmerge merge mergekit_config.yml OUT{flags}\n```\n"
    if recipe.method in RANDOM:
        where = "the `# jaxmerge:` line's merge key" if recipe.merge_key else f"seed {options.seed or 0}"
        return text + f"\nThe DARE/DELLA masks come from {where}; mergekit draws masks of its own."
    if options.math_dtype is None and recipe.math_dtype is None:
        text += "\n`mergekit-yaml mergekit_config.yml OUT` (mergekit 0.1.5) computes the same merge (equal up to " \
                "float rounding).\n"
    return text


def card_writer(recipe: Recipe, options):
    """`save`'s extra hook: README.md and mergekit_config.yml in the temporary output directory."""
    method = METHODS[recipe.method]
    base = recipe.base_model if method.uses_base else None
    sources = [s.model for sl in recipe.slices for s in sl.sources if s.model != base]

    def write(tmp: Path) -> None:
        write_card(tmp, sources=list(dict.fromkeys(sources)), base=base, method=recipe.method, recipe=recipe.raw,
                   recipe_text=recipe.text, rebuild=rebuild_text(recipe, options))
    return write


def output_tokenizer(vocab, template: str | None, donor: Path, copy: bool):
    """The tokenizer object the output carries, or None to copy the donor's files (or write none). A built
    vocabulary's is always written (as mergekit writes it); a chat template goes into it, or into the donor's."""
    if vocab is not None:
        tokenizer = vocab.tokenizer
    elif template is not None and copy:
        from jaxmerge.merge.vocab import load_tokenizer
        tokenizer = load_tokenizer(donor, "chat_template")
    else:
        return None
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def write_tokenizer(folder: Path, done, options) -> None:
    """Only the tokenizer a merge result (jaxmerge.merge.build.Merged) would be written with, into `folder`."""
    import shutil
    from jaxmerge.io import TOKENIZER_FILES
    tokenizer = output_tokenizer(done.vocab, done.template, done.tokenizer_from, options.copy_tokenizer)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    elif options.copy_tokenizer and done.tokenizer_from is not None:
        for name in TOKENIZER_FILES:
            if (Path(done.tokenizer_from) / name).is_file():
                shutil.copy2(Path(done.tokenizer_from) / name, folder / name)


def write_merge(recipe: Recipe, model: Model, out_dir, options, tokenizer_from: Path, vocab=None,
                template: str | None = None, tower=None) -> Path:
    """Check and write the merged model as `options` say (shards, tokenizer, card). `vocab`: the reconciled
    vocabulary (jaxmerge.merge.vocab), whose tokenizer is written; `template`: a resolved chat template;
    `tower` (jaxmerge.vlm.checkpoint.Tower): write that VLM with `model` as its language model. A deferred
    merge (jaxmerge.merge.stream) refuses a non-finite tensor as it is made: the directory is then not written."""
    shard = options.out_shard_size if options.out_shard_size > 0 else ONE_FILE
    tokenizer = output_tokenizer(vocab, template, tokenizer_from, options.copy_tokenizer)
    card = card_writer(recipe, options) if options.write_model_card else None

    def extra(tmp: Path) -> None:
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if card is not None:
            card(tmp)
    copy_from = tokenizer_from if options.copy_tokenizer and tokenizer is None else None
    writer = save if tower is None else partial(save_vlm, tower)
    return writer(model, out_dir, tokenizer_from=copy_from, max_shard_size=shard, overwrite=options.overwrite,
                  extra=extra)
