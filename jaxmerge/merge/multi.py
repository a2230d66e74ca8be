"""Multi-document recipes (mergekit-multi's): YAML documents separated by `---`, each a recipe with a `name`,
later ones naming earlier results as models; the last document (the one without a name, if any) is the output.

    docs = read_chain(path)                 # [Document(name, recipe)], checked whole before anything runs
    run_chain(docs, out, options, intermediate_dir=None, lazy=True)

A document may name only documents before it: a name that is not an earlier document is a model path (an
error when there is none), a later document or itself is refused (a cycle needs one of those). Intermediates stay
in memory (their tokenizer files in a temporary folder) and are dropped after their last use; with
`intermediate_dir` each is written to DIR/NAME as a Hugging Face model, and with `lazy` one that already exists
there is read instead of merged again (mergekit-multi's --intermediate-dir and --lazy). A name is taken before a
path, as mergekit takes it.
"""
from __future__ import annotations

import dataclasses
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import read_text
from jaxmerge.merge.recipe import Recipe, RecipeWarning, parse_document
from jaxmerge.yamlfile import MAX_BYTES, parse_yaml

SEPARATOR = re.compile(r"---(\s.*)?")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclasses.dataclass(frozen=True)
class Document:
    name: str | None
    recipe: Recipe
    index: int


def split_documents(text: str, where: str) -> list[tuple[str, dict]]:
    """(text, mapping) of each YAML document (lines of `---` separate them), empty ones dropped; each parsed by
    the bounded reader (jaxmerge.yamlfile)."""
    chunks, lines = [], []
    for line in text.splitlines(keepends=True):
        if SEPARATOR.fullmatch(line.rstrip("\r\n")):
            chunks.append("".join(lines))
            lines = []
        else:
            lines.append(line)
    chunks.append("".join(lines))
    docs = [(c, parse_yaml(c, f"{where} (document {i})")) for i, c in enumerate(chunks)]
    docs = [(c, raw) for c, raw in docs if raw is not None]
    expect(all(isinstance(raw, dict) for _, raw in docs), f"{where}: expected every document to be a recipe mapping")
    return docs


def is_chain(path: str | Path) -> bool:
    """More than one document, or a named one: a multi-document recipe (else an ordinary one)."""
    docs = split_documents(read_text(Path(path), "a recipe YAML file", MAX_BYTES), str(path))
    return len(docs) > 1 or any("name" in raw for _, raw in docs)


def _name(raw: dict, index: int, last: bool) -> str | None:
    name = raw.pop("name", None)
    expect(name is None or (isinstance(name, str) and name.strip() == name and name != "" and "+" not in name),
           f"document {index}: expected name as a plain string, found {name!r}")
    expect(name is not None or last, f"document {index}: expected a name (only the last document, the output, "
                                     "may have none), found none")
    return name


def read_chain(path: str | Path) -> list[Document]:
    """The documents of a recipe file, parsed and their references checked (module doc)."""
    path = Path(path)
    docs = split_documents(read_text(path, "a recipe YAML file", MAX_BYTES), str(path))
    expect(docs != [], f"{path}: expected at least one recipe document, found none")
    names = [_name(raw, i, i == len(docs) - 1) for i, (_, raw) in enumerate(docs)]
    duplicate = next((n for n in names if n is not None and names.count(n) > 1), None)
    expect(duplicate is None, f"{path}: expected each document name once, found {duplicate!r} twice")
    known = frozenset(n for n in names if n)
    chain = [Document(name, parse_document(raw, text, path.parent.absolute(), f"{path} (document {i})", known), i)
             for i, (name, (text, raw)) in enumerate(zip(names, docs))]
    check_references(chain)
    text = read_text(path, "a recipe YAML file", MAX_BYTES)  # the output's card carries the whole chain
    return chain[:-1] + [dataclasses.replace(chain[-1], recipe=dataclasses.replace(chain[-1].recipe, text=text))]


def references(recipe: Recipe) -> list[str]:
    """The model part of every reference the recipe makes (LoRA adapters aside)."""
    from jaxmerge.merge.lora import split
    from jaxmerge.merge.prepare import referenced
    from jaxmerge.merge.tokenspec import row_models
    refs = referenced(recipe) + row_models(recipe.tokenizer)
    if recipe.tokenizer is not None and recipe.tokenizer.source not in ("base", "union"):
        refs.append(recipe.tokenizer.source)
    return [split(r)[0] for r in dict.fromkeys(refs)]


def check_references(docs: list[Document]) -> None:
    """Every document names earlier documents or models that exist; no later document, no cycle."""
    from jaxmerge.io import resolve
    index = {d.name: d.index for d in docs if d.name}
    uses = {d.index: [index[r] for r in references(d.recipe) if r in index] for d in docs}
    for d in docs:
        for ref in references(d.recipe):
            if ref not in index:
                try:
                    resolve(ref)
                except JaxmergeError:
                    raise JaxmergeError(f"document {d.index}{f' ({d.name})' if d.name else ''}: expected an earlier "
                                        f"document's name or a model, found {ref!r} (documents: "
                                        f"{sorted(index)})") from None
                continue
            j = index[ref]
            expect(j != d.index, f"document {d.index} ({d.name}): a cycle: it names itself")
            expect(j < d.index, f"document {d.index}{f' ({d.name})' if d.name else ''}: "
                                f"{'a cycle: ' if d.index in _reach(uses, j) else ''}it names {ref!r}, document "
                                f"{j}, which comes later (a chain runs in order)")


def _reach(uses: dict[int, list[int]], start: int) -> set[int]:
    seen, todo = set(), [start]
    while todo:
        for nxt in uses[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _exists(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in WEIGHTS)


def run_chain(docs: list[Document], out_dir, options, *, intermediate_dir=None, lazy: bool = True,
              on_step: Callable[[str], None] = lambda step: None) -> Path:
    """Merge the documents in order (module doc); the last one is written to `out_dir`."""
    from jaxmerge.atomic import check_target
    from jaxmerge.merge.build import merge_model, merge_recipe
    check_target(Path(out_dir).absolute(), options.overwrite)
    last_use = {r: d.index for d in docs for r in references(d.recipe)}
    provided: dict = {}
    with tempfile.TemporaryDirectory(prefix="jaxmerge-chain-") as tmp:
        for d in docs[:-1]:
            on_step(f"document {d.index} ({d.name})")
            if intermediate_dir is not None:
                target = Path(intermediate_dir) / d.name
                if not (lazy and _exists(target)):
                    merge_recipe(d.recipe, target, dataclasses.replace(options, overwrite=True), provided=provided)
                provided[d.name] = target
            elif d.name in last_use:
                provided[d.name] = in_memory(merge_model(d.recipe, options, provided), Path(tmp) / d.name, options)
            else:
                warnings.warn(f"document {d.index} ({d.name}) is named by no later document: not merged (with "
                              "--intermediate-dir it is written there)", RecipeWarning, stacklevel=2)
            for name in [n for n in provided if last_use.get(n, -1) <= d.index and n != d.name]:
                del provided[name]  # no later document reads it
        on_step(f"document {docs[-1].index}")
        return merge_recipe(docs[-1].recipe, out_dir, options, provided=provided, on_step=on_step)


def in_memory(done, folder: Path, options):
    """An intermediate kept in memory: its Model, `path` a folder with only its tokenizer (what later documents
    read from disk: vocabularies, chat templates, the copied tokenizer)."""
    from jaxmerge.deferred import materialise
    from jaxmerge.merge.output import write_tokenizer
    expect(done.tower is None, f"expected text intermediates in memory, found a vision-language merge in "
                               f"{folder.name}: pass --intermediate-dir so it is written whole, tower included")
    folder.mkdir(parents=True)
    write_tokenizer(folder, done, options)
    return dataclasses.replace(done.model, params=materialise(done.model.params), path=folder)
