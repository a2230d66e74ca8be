"""Reading the YAML files users write (run configs, merge recipes, task files): bounded, with one-line errors.

`yaml.safe_load` runs no code, but it still lets a document be a bomb: aliases make a "billion laughs" (a few
hundred bytes whose expansion has 10**9 nodes: harmless until something walks it, as every validator and the
config hash do), a deeply nested document ends in RecursionError, a 5001-digit integer in Python's int-digits
ValueError, a bad date in another ValueError. `BoundedLoader` checks the composed node graph before anything is
constructed: its size counted as if every alias were expanded (without expanding it), its depth, no alias
cycles, and no number longer than MAX_NUMBER characters.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from jaxmerge.errors import JaxmergeError
from jaxmerge.files import MB, read_text

MAX_BYTES = 16 * MB
MAX_NODES = 100_000   # expanded: a config or recipe has hundreds; a task file's template, a few
MAX_DEPTH = 64
MAX_NUMBER = 100
NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_node(root: yaml.Node, where: str) -> None:
    """Refuse a node graph whose expansion is larger than MAX_NODES, deeper than MAX_DEPTH, or cyclic, and
    numbers longer than MAX_NUMBER; iterative post-order with memoised sizes, so shared (aliased) nodes cost once."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_nodes.discard(key)
            _check_bounds(node, size[key], depth[key], where)
        elif key in open_nodes:
            raise JaxmergeError(f"{where}: expected YAML without recursive aliases, found an alias inside "
                                "its own anchor")
        elif key not in size:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in _children(node))


def _check_bounds(node: yaml.Node, size: int, depth: int, where: str) -> None:
    if size > MAX_NODES:
        raise JaxmergeError(f"{where}: expected YAML of at most {MAX_NODES} values once aliases are expanded, "
                            f"found {size} (an alias bomb?)")
    if depth > MAX_DEPTH:
        raise JaxmergeError(f"{where}: expected YAML nested at most {MAX_DEPTH} levels deep, found {depth}")
    if isinstance(node, yaml.ScalarNode) and node.tag in NUMBER_TAGS and len(node.value) > MAX_NUMBER:
        raise JaxmergeError(f"{where}: line {node.start_mark.line + 1}: expected numbers of at most "
                            f"{MAX_NUMBER} characters, found one of {len(node.value)}")


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composed document is checked (`check_node`) before it is constructed."""
    where = "YAML"

    def compose_document(self):
        node = super().compose_document()
        check_node(node, self.where)
        return node


class TagSkippingLoader(BoundedLoader):
    """BoundedLoader that reads application tags (lm-eval's `!function`) as null instead of refusing them."""


TagSkippingLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def parse_yaml(text: str, where: str, skip_tags: bool = False) -> Any:
    """The document in `text` (from `where`, named in errors), through BoundedLoader (with `skip_tags`,
    TagSkippingLoader)."""
    try:
        return _load(text, where, TagSkippingLoader if skip_tags else BoundedLoader)
    except RecursionError:
        raise JaxmergeError(f"{where}: expected YAML nested at most {MAX_DEPTH} levels deep, found deeper "
                            "nesting") from None
    except (yaml.YAMLError, ValueError, OverflowError) as e:  # ValueError/OverflowError: a date like 2024-13-45
        raise JaxmergeError(f"expected valid YAML in {where}, found: {_first_line(e)}") from None


def _load(text: str, where: str, loader_class: type[BoundedLoader]) -> Any:
    loader = loader_class(text)  # the reader checks the characters here already
    loader.where = where
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_yaml(path: str | os.PathLike, what: str) -> Any:
    """The parsed document of the `what` file at `path` (e.g. "a run config"); refuses a missing or non-regular
    file, more than MAX_BYTES, bytes that are not UTF-8, and invalid or bomb-like YAML, in one line."""
    path = Path(path)
    return parse_yaml(read_text(path, f"{what} file", MAX_BYTES), str(path))
