"""The model card and recipe every jaxmerge output carries: README.md and mergekit_config.yml.

    write_card(out_dir, sources=[...], base="org/base" or None, method="ties", recipe={...} or None,
               sections={"Evolution": "..."}, rebuild="jaxmerge merge mergekit_config.yml OUT", tags=("evolved",))

One function for `jaxmerge merge`, the evolve export and the DFS export, so every output says the same things in
the same places: Hugging Face model-card front matter (`base_model`, `tags`, `library_name: transformers`), the
method and its paper, the models merged, the recipe, any caller sections (genes, fitness with task and split),
and how to rebuild it. `mergekit_config.yml` is written when there is a recipe, as mergekit writes it into its
outputs (the recipe's own text when given, so comments such as `# jaxmerge: {...}` survive).

`base_model` lists only the models named by a Hugging Face repo id (`org/name`, or a local HF-cache snapshot of
one): the Hub rejects local paths there, and mergekit lists the same subset. Every model, local or not, is listed
in the card's body. Host-only, no jax: write it into `jaxmerge.io.save`'s temporary directory (its `extra` hook).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import yaml

BASE_TAGS = ("merge", "jaxmerge", "mergekit")
TMP_NAME = re.compile(r"\.(.+)\.tmp-[^/]*")  # jaxmerge.atomic's temporary directory for NAME
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
CACHE_SNAPSHOT = re.compile(r"models--([\w.-]+?)--([\w.-]+)/snapshots/[^/]+/?$")


def hub_id(ref: str) -> str | None:
    """The Hub repo id `ref` names: `org/name` when it is no local path, or the repo of an HF-cache snapshot."""
    snapshot = CACHE_SNAPSHOT.search(str(ref))
    if snapshot:
        return f"{snapshot[1]}/{snapshot[2]}"
    if REPO_ID.fullmatch(str(ref)) and not Path(ref).expanduser().exists():
        return str(ref)
    return None


def front_matter(models: Sequence[str], tags: Sequence[str]) -> str:
    """The YAML header the Hub reads: base models by repo id, tags, and the library that loads the weights."""
    ids = list(dict.fromkeys(i for i in map(hub_id, models) if i))
    meta = {"base_model": ids, "tags": list(dict.fromkeys((*BASE_TAGS, *tags))), "library_name": "transformers"}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _method_text(method: str, base: str | None) -> str:
    from jaxmerge.merge.methods import METHODS  # lazily: the merge package calls this module
    record = METHODS.get(method)
    paper = f" ({record.paper})" if record is not None else ""
    with_base = f", with `{base}` as the base" if base else ""
    return f"`{method}`{paper}{with_base}."


def recipe_yaml(recipe: Mapping | None, recipe_text: str | None) -> str | None:
    """The recipe as text: the caller's own text when given, else a YAML dump in the recipe's key order."""
    if recipe_text is not None:
        return recipe_text if recipe_text.endswith("\n") else recipe_text + "\n"
    return None if recipe is None else yaml.safe_dump(dict(recipe), sort_keys=False)


def card_text(name: str, *, sources: Sequence[str], base: str | None, method: str, recipe_text: str | None,
              sections: Mapping[str, str], rebuild: str, tags: Sequence[str]) -> str:
    """README.md's text (see the module docstring for what goes where)."""
    models = list(dict.fromkeys([*sources, *([base] if base else [])]))
    parts = [front_matter(models, tags), f"# {name}\n",
             "A merge of pre-trained language models made with jaxmerge (JAX, mergekit-compatible recipes).\n",
             f"## Merge method\n\n{_method_text(method, base)}\n",
             "## Models merged\n\n" + "".join(f"- `{m}`{' (base)' if m == base else ''}\n" for m in models)]
    if recipe_text is not None:
        parts.append(f"## Recipe\n\n```yaml\n{recipe_text}```\n")
    parts += [f"## {title}\n\n{body.rstrip()}\n" for title, body in sections.items()]
    parts.append(f"## How to rebuild it\n\n{rebuild.rstrip()}\n")
    return "\n".join(parts)


def title(directory: Path) -> str:
    """The output's name: the directory's, or the final name of jaxmerge.atomic's temporary `.NAME.tmp-*`."""
    match = TMP_NAME.fullmatch(directory.name)
    return match[1] if match else directory.name


def write_card(directory: Path, *, sources: Sequence[str], base: str | None, method: str,
               recipe: Mapping | None, sections: Mapping[str, str] = {}, rebuild: str,
               tags: Sequence[str] = (), recipe_text: str | None = None, name: str | None = None) -> None:
    """Write README.md (model card) and, when there is a recipe, mergekit_config.yml into `directory`.
    `name`: the card's title (default: the directory's name, see `title`)."""
    directory = Path(directory)
    text = recipe_yaml(recipe, recipe_text)
    card = card_text(name or title(directory), sources=sources, base=base, method=method, recipe_text=text,
                     sections=sections, rebuild=rebuild, tags=tags)
    (directory / "README.md").write_text(card, encoding="utf-8")
    if text is not None:
        (directory / "mergekit_config.yml").write_text(text, encoding="utf-8")
