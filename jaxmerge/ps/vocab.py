"""PS sources whose vocabularies disagree, aligned once at load by the run config's `tokenizer_source` /
`tokenizer:` settings, exactly as `jaxmerge merge` aligns a recipe's models (jaxmerge.merge.reconcile).

Only embed and lm_head depend on the vocabulary, so only they are read whole on the host (every process reads
the same rows and builds the same aligned tables); every other leaf is still loaded sliced onto the mesh. The
aligned tables stay in float32, the dtype the exported recipe merges in (`dtype: float32`), so that a mean row
of a token some models lack rounds once, as in `jaxmerge merge`, and the winner rebuilds bit for bit. The
output tokenizer is saved once to a directory of the run's process: tasks are tokenized with it and the
exported winner carries it.

    aligned = align_sources(tokenizer_spec, models, base)   # Aligned(vocab, tables, tokenizer_dir)
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxmerge.evolve.sliced import Checkpoint, read_cell
from jaxmerge.io import Model, nonfinite_error
from jaxmerge.merge.reconcile import reconcile
from jaxmerge.merge.vocab import Vocabulary
from jaxmerge.params import param_shapes

ROW_LEAVES = ("embed", "lm_head")


class Aligned(NamedTuple):
    vocab: Vocabulary
    tables: dict[str, dict[str, np.ndarray]]  # source path -> {embed, lm_head}: [vocab.size, D] float32
    tokenizer_dir: Path                          # the output tokenizer, saved


def read_whole(ckpt: Checkpoint, leaf: str) -> np.ndarray:
    """One global leaf of a checkpoint, read whole on the host in float32 (NaN/Inf refused in one line)."""
    shape = param_shapes(ckpt.spec)[leaf]
    out = np.empty(shape, np.float32)
    cell = ckpt.table[leaf][()]
    if not read_cell(cell, tuple(slice(0, n) for n in shape), out):
        file, name = (cell if not isinstance(cell[0], tuple) else cell[0])[:2]
        raise nonfinite_error(name, Path(file))
    return out


def align_sources(spec, models: list[Checkpoint], base: Checkpoint | None) -> Aligned:
    """The output vocabulary of `spec` (a TokenizerSpec) over models then base (the order of the exported
    recipe, which `jaxmerge merge` aligns in), and every source's embed / lm_head rows moved into it."""
    everything = models + ([base] if base else [])
    refs = list(dict.fromkeys(str(c.path) for c in everything))
    held = {str(c.path): Model(c.spec, {leaf: read_whole(c, leaf) for leaf in ROW_LEAVES if leaf in c.table},
                               c.path) for c in everything}
    vocab, aligned = reconcile(spec, str(base.path) if base else None, refs, {leaf: refs for leaf in ROW_LEAVES},
                               held)
    folder = Path(tempfile.mkdtemp(prefix="jaxmerge-vocab-"))
    atexit.register(shutil.rmtree, folder, True)
    vocab.tokenizer.save_pretrained(str(folder))
    return Aligned(vocab, {ref: aligned[ref].params for ref in refs}, folder)
