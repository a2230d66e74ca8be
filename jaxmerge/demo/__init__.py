"""The demo's synthetic world: a word-level tokenizer, four skills, a base model and one specialist per skill.

`build_world(out_dir, seed=0, quick=False) -> World` is what `jaxmerge demo` calls. See README.md here for
what the world is and what merges of it score.
"""
from jaxmerge.demo.world import World, build_world

__all__ = ["World", "build_world"]
