"""Sources loaded straight onto the run's mesh, each process reading only the slices its own devices hold.

A checkpoint is first opened from its headers alone (`open_checkpoint`: config.json, names, shapes and dtypes
checked the way `jaxmerge.io.load` checks them, no tensor data read). A *name table* then says which HF tensor
fills each row of a stacked array: an object array of (file, name) with the stack's leading shape ([M] / [M, L]
for a merge's sources, [L] for one model, [T] for a DFS pool). `load_table` turns a table into global
`jax.Array`s with the rules table's shardings through `jax.make_array_from_callback`, whose callback reads only
the requested index of each tensor (`safe_open(...).get_slice(name)[...]`), converts it to the run dtype, into
one 64-byte-aligned block per distinct index (which the CPU client adopts as the device buffer without
copying), checking each value it reads finite; the processes then agree on the first bad tensor any of them
found (`first_everywhere`). So with sources split over the "model" axis no host ever holds all of them.

Rows are read CHUNK_BYTES at a time, each read opening and closing its file: safetensors memory-maps files, and
pages touched through a map that stays open count towards the process's resident memory until it closes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.evolve.mesh import tensor_spec
from jaxmerge.io import DTYPES, all_finite, check_meta, check_one_dtype, nonfinite_error, open_safetensors, \
    resolve, tensor_files
from jaxmerge.params import Params, TensorName, layer_leaf_shapes, param_shapes

CHUNK_BYTES = 2 * 2**20  # rows of a block are read this many bytes at a time
HEADER_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}  # safetensors codes -> numpy names


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checked checkpoint whose tensors have not been read: its spec, where it is, and its name table."""
    spec: ArchSpec
    path: Path
    table: Params  # canonical pytree of object arrays of cells: [] for globals, [L] for layer leaves
    dtype: str     # the storage dtype of its tensors (a numpy name)
# A cell is (file, HF name), or for a leaf stored one tensor per expert a tuple of pieces (file, name, expert,
# first row, rows) that fill it together (jaxmerge.params.TensorName).


def open_checkpoint(path_or_repo_id) -> Checkpoint:
    """Find a checkpoint and check every tensor's name, shape and dtype from the headers (no data read)."""
    model_dir = resolve(path_or_repo_id)
    spec = ArchSpec.from_dir(model_dir)
    names, files = tensor_files(model_dir, spec)
    shapes, kinds = param_shapes(spec), set()
    table: Params = {leaf: _cells(()) for leaf in shapes if leaf != "layers"}
    table["layers"] = {leaf: _cells((spec.num_layers,)) for leaf in shapes["layers"]}
    for file in sorted(set(files[n] for n in names)):
        with open_safetensors(file) as f:
            for name in (n for n in names if files[n] == file):
                t = names[name]
                header = f.get_slice(name)
                dtype = HEADER_DTYPES.get(header.get_dtype(), header.get_dtype().lower())
                check_meta(name, header.get_shape(), dtype, t.shape, file)
                kinds.add(dtype)
                _fill(table[t.leaf] if t.section == "global" else table["layers"][t.leaf], t, file, name)
    check_one_dtype(kinds, model_dir)
    return Checkpoint(spec, model_dir, table, kinds.pop())


def _fill(cells: np.ndarray, t: TensorName, file: Path, name: str) -> None:
    index = () if t.layer is None else t.layer
    if t.expert is None:
        cells[index] = (file, name)
    else:
        cells[index] = (*(cells[index] or ()), (file, name, t.expert, t.row, t.shape[0]))


def _cells(shape: tuple[int, ...]) -> np.ndarray:
    return np.empty(shape, dtype=object)


def load_table(table: Params, spec: ArchSpec, mesh, dtype: str) -> Params:
    """Global arrays [*table shape, *tensor shape] in `dtype`, laid out by the rules table (`tensor_spec`),
    checked finite. Leaves of a nested dict ("layers", a DFS "pool") are layer leaves."""
    globals_, layers = param_shapes(spec), layer_leaf_shapes(spec)
    shapes = {key: {leaf: layers[leaf] for leaf in cells} if isinstance(cells, dict) else globals_[key]
              for key, cells in table.items()}
    cells, tree = jax.tree.flatten(table)
    found: list[tuple[int, int]] = []  # (leaf, flat cell) of every tensor this process read NaN/Inf in
    leaves = [load_cells(c, shape, leaf, mesh, dtype, lambda cell, i=i: found.append((i, cell)))
              for i, (c, shape, leaf) in enumerate(zip(cells, tree.flatten_up_to(shapes), _leaf_names(table)))]
    bad = first_everywhere(found)
    if bad is not None:
        cell = cells[bad[0]].reshape(-1)[bad[1]]
        file, name = (cell if not isinstance(cell[0], tuple) else cell[0])[:2]
        raise nonfinite_error(name, file)
    return jax.tree.unflatten(tree, leaves)


def _leaf_names(table: Params) -> list[str]:
    return [str(path[-1].key) for path, _ in jax.tree_util.tree_flatten_with_path(table)[0]]


def first_everywhere(found: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The first bad cell that any process found, the same answer on every process: each process read only its
    own slices, and if only the one holding a bad slice stopped, the others would wait for it forever."""
    none = (2**31 - 1, 2**31 - 1)
    first = min(found, default=none)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        everyone = np.asarray(multihost_utils.process_allgather(np.asarray(first, np.int32)))
        first = min(tuple(int(v) for v in row) for row in everyone.reshape(-1, 2))
    return None if first == none else first


def load_cells(cells: np.ndarray, tensor_shape: tuple[int, ...], leaf: str, mesh, dtype: str,
               on_nonfinite) -> jax.Array:
    shape = (*cells.shape, *tensor_shape)
    sharding = NamedSharding(mesh, tensor_spec(mesh, leaf, shape))
    return jax.make_array_from_callback(shape, sharding,
                                        shard_reader(cells, shape, np.dtype(DTYPES[dtype]), on_nonfinite))


def shard_reader(cells: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, on_nonfinite):
    """The callback of one array: index -> that block, filled tensor by tensor. Devices that hold the same block
    (replicas over "pop") get the same host array, read once. A tensor with NaN/Inf in the block is reported
    as `on_nonfinite(flat cell index)`."""
    done: dict[tuple, np.ndarray] = {}
    flat = np.arange(cells.size).reshape(cells.shape)

    def read(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple(s.indices(n) for s, n in zip(index, shape))
        if key not in done:
            ranges = tuple(slice(*k) for k in key)
            picked, ids = cells[(*ranges[:cells.ndim], Ellipsis)], flat[ranges[:cells.ndim]]
            block = aligned_empty(tuple(len(range(*k)) for k in key), dtype)
            for pos in np.ndindex(picked.shape):
                if not read_cell(picked[pos], ranges[cells.ndim:], block[pos]):
                    on_nonfinite(int(ids[pos]))
            done[key] = block
        return done[key]
    return read


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an `align`-byte boundary: JAX's CPU client then takes it as
    a device buffer without a copy (measured: a 100 MiB block costs 100 MiB, not 200, while it is placed)."""
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + size].view(dtype).reshape(shape)


def read_cell(cell: tuple, index: tuple[slice, ...], out: np.ndarray) -> bool:
    """out[...] = the cell's tensor[index]; a cell of pieces reads each piece's overlap with the block."""
    if not isinstance(cell[0], tuple):
        return read_block(*cell, index, out)
    finite = True
    experts, rows = index[0], index[1]
    for file, name, expert, row, length in cell:
        if not experts.start <= expert < experts.stop:
            continue
        lo, hi = max(rows.start, row), min(rows.stop, row + length)
        if lo < hi:
            target = out[expert - experts.start, lo - rows.start:hi - rows.start]
            finite = read_block(file, name, (slice(lo - row, hi - row), *index[2:]), target) and finite
    return finite


def read_block(file: Path, name: str, index: tuple[slice, ...], out: np.ndarray) -> bool:
    """out[...] = tensor[index] (unit-step slices) in out's dtype, CHUNK_BYTES of rows at a time, so that the
    bytes in flight besides `out` stay small; whether every value read was finite."""
    rows = max(1, CHUNK_BYTES // max(1, out[:1].nbytes))
    first, finite = index[0], True
    for i in range(0, out.shape[0], rows):
        part = read_slice(file, name, (slice(first.start + i, min(first.start + i + rows, first.stop)), *index[1:]))
        out[i:i + rows] = part.astype(out.dtype, copy=False)
        finite = finite and all_finite(part)
    return finite


def read_slice(file: Path, name: str, index: tuple[slice, ...]) -> np.ndarray:
    """`index` of one tensor. The file is mapped only while it is read: pages touched through an open map count
    towards the process's resident memory."""
    with open_safetensors(file) as f:
        try:
            part = f.get_slice(name)[index]
        except Exception as e:
            raise JaxmergeError(f"expected tensor {name} to be readable in {file}, found: {e}") from None
    return part
