"""Hugging Face checkpoints <-> `Model`: strict, lazy, offline loading and atomic sharded saving.

Loading reads safetensors tensor by tensor through `safe_open(..., framework="np")` (bf16 arrives as ml_dtypes
bfloat16), checks every tensor against the spec's shapes, and stacks layers. Pickle checkpoints are refused: a
`.bin` can run code when unpickled. Repo ids resolve only inside the local HF cache; no network call is made.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Callable

import ml_dtypes
import numpy as np
from safetensors import safe_open

from jaxmerge import leftovers
from jaxmerge.arch import ArchSpec
from jaxmerge.atomic import atomic_dir
from jaxmerge.deferred import Deferred, DeferredStack
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import open_regular, read_text
from jaxmerge.params import LAYOUTS, Params, TensorName, aligned_stack, hf_names, layout_of, param_shapes, \
    piece_index, to_hf_tensors
from jaxmerge.stheader import TensorInfo
from jaxmerge.stwrite import write as save_file  # the seam tests patch: the one shard writer
from jaxmerge.vlm.view import text_names
from jaxmerge.weights import tensor_headers

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")
IGNORED_TENSORS = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
LAYER = re.compile(r"model\.layers\.(\d{1,9})\.")


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded decoder: its static spec, its canonical params (numpy or jax arrays), where it came from, and how
    its checkpoint stores experts (a saved model keeps the layout it was read in; merges write mergekit's)."""
    spec: ArchSpec
    params: Params
    path: Path | None = None
    layout: str = "fused"

    @property
    def dtype(self) -> str:
        return np.dtype(self.params["embed"].dtype).name

    @property
    def num_parameters(self) -> int:
        return int(sum(np.prod(np.shape(x)) for x in _leaves(self.params)))


def _leaves(tree: Params):
    for v in tree.values():
        yield from (_leaves(v) if isinstance(v, dict) else [v])


def resolve(path_or_repo_id: str | os.PathLike) -> Path:
    """A local model directory, or a repo id found in the local Hugging Face cache (never downloaded)."""
    path = Path(path_or_repo_id).expanduser()
    expect(not leftovers.is_leftover(path.absolute().name),
           f"expected a model directory, found {path}: an unfinished temporary of a jaxmerge writer that was "
           "killed (incomplete by definition; the next write of its target removes it)")
    if path.is_dir():
        return path.absolute()
    text = str(path_or_repo_id)
    expect(not path.exists(), f"expected a model directory, found a file: {text}")
    parked = leftovers.parked_output(path.absolute())
    expect(parked is None, f"expected a model directory at {text}, found none: an overwrite of it was killed "
                           f"and left the previous one at {parked} (the next write of {path.name} puts it back)")
    expect(re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None,
           f"expected a model directory or a Hugging Face repo id, found no directory at {text}")
    snapshot = cached_snapshot(text)
    expect(snapshot is not None, f"expected {text} as a local directory or in the local Hugging Face cache "
                                 f"({hf_cache_dir()}), found neither (jaxmerge never downloads)")
    return snapshot


def hf_cache_dir() -> Path:
    """The HF hub cache, read from the environment now (huggingface_hub reads it once, at its import)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")  # the latter: legacy name
    if hub:
        return Path(hub).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(os.environ.get("HF_HOME") or Path(cache) / "huggingface").expanduser() / "hub"


def cached_snapshot(repo_id: str) -> Path | None:
    """The snapshot that refs/main names in the cache layout models--ORG--NAME/{refs,snapshots}, or None."""
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = repo / "snapshots" / read_text(ref, "a cache ref", 4096).strip()
    return snapshot if snapshot.is_dir() else None


def open_safetensors(file: Path):
    try:
        return safe_open(str(file), framework="np")
    except Exception as e:
        raise JaxmergeError(f"expected a readable safetensors file at {file}, found: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _read(file: Path, name: str, handles: dict[Path, Any]) -> np.ndarray:
    if file not in handles:
        handles[file] = open_safetensors(file).__enter__()
    try:
        return handles[file].get_tensor(name)
    except Exception as e:
        raise JaxmergeError(f"expected tensor {name} to be readable in {file}, found: {e}") from None


def read_into(file: Path, name: str, info: TensorInfo, out: np.ndarray) -> None:
    """Tensor `name`'s bytes (its header entry `info`) read from `file` into `out` (C-contiguous, as many
    bytes): one copy from the page cache, where safetensors' get_tensor maps the file and copies it out."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    expect(view.nbytes == info.end - info.begin, f"expected tensor {name} to hold {view.nbytes} bytes in {file}, "
                                                 f"found {info.end - info.begin}")
    with os.fdopen(open_regular(file, "a safetensors file"), "rb", buffering=0) as f:  # readinto: no copy
        (header,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + header + info.begin)
        while view.nbytes:  # one read may return less (Linux stops at about 2 GiB)
            done = f.readinto(view)
            expect(bool(done), f"expected tensor {name} to be readable in {file}, found the file shorter")
            view = view[done:]


def load(path_or_repo_id: str | os.PathLike, dtype: str | None = None, check_finite: bool = True,
         lazy: bool = False) -> Model:
    """Load a HF checkpoint of a known family into canonical params (numpy; jit moves them to devices).
    `lazy`: every check that needs no tensor data now (names, shapes, dtypes, layer count), and leaves that are
    read from the files only when used (jaxmerge.deferred; the finite check then runs at that read)."""
    model_dir = resolve(path_or_repo_id)
    spec = ArchSpec.from_dir(model_dir)
    expect(dtype is None or dtype in DTYPES, f"expected dtype in {sorted(DTYPES)}, found {dtype!r}")
    if lazy:
        return _deferred_model(model_dir, spec, dtype, check_finite)
    layers: dict[str, list] = {}
    params: Params = {}
    shapes = param_shapes(spec)
    found = tensor_files(model_dir, spec)
    for t, array in checked_tensors(model_dir, spec, check_finite, found):
        array = array if dtype is None else array.astype(DTYPES[dtype])
        if t.section == "global":
            params[t.leaf] = array
        else:  # made only now: the headers have confirmed the layer count (a config may claim 10**9)
            _place(layers.setdefault(t.leaf, [None] * spec.num_layers), t, array, shapes["layers"][t.leaf][1:])
    params["layers"] = {leaf: aligned_stack(layers[leaf]) for leaf in shapes["layers"]}
    check_one_dtype({np.dtype(a.dtype).name for a in _leaves(params)}, model_dir)
    return Model(spec, params, model_dir, layout_of(spec, found[0]))


def _deferred_model(model_dir: Path, spec: ArchSpec, dtype: str | None, check_finite: bool) -> Model:
    """`load(..., lazy=True)`: one Deferred per tensor (a layer of an expert-stacked leaf gathers its pieces)."""
    names, files, stored = tensor_table(model_dir, spec)
    check_one_dtype({info.dtype for info in stored.values()}, model_dir)
    kind = np.dtype(DTYPES[dtype or next(iter(stored.values())).dtype])
    shapes = param_shapes(spec)
    parts: dict[tuple[str, int | None], list[tuple[str, TensorName]]] = {}
    for name, t in names.items():
        parts.setdefault((t.leaf, t.layer), []).append((name, t))

    def read(leaf: str, layer: int | None, shape: tuple[int, ...]) -> np.ndarray:
        out = None
        for name, t in parts[(leaf, layer)]:
            with open_safetensors(files[name]) as handle:
                array = _read(files[name], name, {files[name]: handle})
            if check_finite:
                check_finite_values(array, name, files[name])
            array = array.astype(kind, copy=False)
            if t.expert is None:
                return array
            out = np.empty(shape, kind) if out is None else out
            out[piece_index(t)] = array
        return out

    def fill(leaf: str, layer: int | None, out: np.ndarray) -> None:
        (name, t), *more = parts[(leaf, layer)]
        if more or t.expert is not None or stored[name].dtype != kind.name or sys.byteorder != "little":
            out[...] = read(leaf, layer, out.shape)  # pieces to gather, or a dtype to convert: read() does it
            return
        read_into(files[name], name, stored[name], out)
        if check_finite:
            check_finite_values(out, name, files[name])

    def deferred(leaf: str, layer: int | None, shape) -> Deferred:
        return Deferred(shape, kind, lambda: read(leaf, layer, tuple(shape)), lambda out: fill(leaf, layer, out))
    params: Params = {leaf: deferred(leaf, None, shape) for leaf, shape in shapes.items() if leaf != "layers"}
    params["layers"] = {leaf: DeferredStack([deferred(leaf, i, shape[1:]) for i in range(spec.num_layers)])
                        for leaf, shape in shapes["layers"].items()}
    return Model(spec, params, model_dir, layout_of(spec, files))


def _place(rows: list, t: TensorName, array: np.ndarray, leaf_shape: tuple[int, ...]) -> None:
    """Layer t.layer of a leaf: the tensor itself, or (a piece of an expert-stacked leaf) written into it."""
    if t.expert is None:
        rows[t.layer] = array
        return
    if rows[t.layer] is None:
        rows[t.layer] = np.empty(leaf_shape, array.dtype)
    rows[t.layer][piece_index(t)] = array


def checked_tensors(model_dir: Path, spec: ArchSpec, check_finite: bool = True, found=None):
    """Yield (TensorName, array) for every tensor `spec` needs, one at a time, each checked against config.json
    (names, shape, dtype, finite); `found`: tensor_files' answer when the caller has it. One tensor in memory at
    a time, so `inspect` can verify a checkpoint larger than RAM."""
    names, files = found or tensor_files(model_dir, spec)
    handles: dict[Path, Any] = {}
    try:
        for name, t in names.items():
            array = _read(files[name], name, handles)
            check_meta(name, array.shape, np.dtype(array.dtype).name, t.shape, files[name])
            if check_finite:
                check_finite_values(array, name, files[name])
            yield t, array
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)


def tensor_files(model_dir: Path, spec: ArchSpec) -> tuple[dict[str, TensorName], dict[str, Path]]:
    """(stored name -> TensorName, stored name -> file) for the tensors `spec` needs, in the expert layout the
    checkpoint uses (a VLM's language-model tensors under the names they are stored as), every one's shape and
    dtype checked from the headers (no tensor data read); missing or unexpected tensors are refused. The
    layer count is checked first, so a config claiming 10**9 layers costs nothing."""
    names, files, _ = tensor_table(model_dir, spec)
    return names, files


def tensor_table(model_dir: Path, spec: ArchSpec):
    """tensor_files' two tables and a third: stored name -> its header entry (TensorInfo: dtype, shape, bytes)."""
    stored = tensor_headers(model_dir)
    renamed = text_names(model_dir, stored)  # a VLM: its language model's tensors under their text names
    headers = {name: stored[renamed[name]] for name in renamed}
    check_layer_count(model_dir, spec, headers)
    names = hf_names(spec, layout_of(spec, headers))
    missing = [n for n in names if n not in headers]
    if missing:
        raise JaxmergeError(f"{model_dir}: expected tensor {missing[0]} (config.json says so), found it missing"
                            + (f" along with {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = [n for n in headers if n not in names and not IGNORED_TENSORS.fullmatch(n)
             and not (n == "lm_head.weight" and spec.tie_word_embeddings)]
    if extra:
        raise JaxmergeError(f"{model_dir}: expected only {spec.model_type} tensors, found unexpected "
                            f"{renamed[extra[0]]}")
    for name, t in names.items():
        file, info = headers[name]
        check_meta(renamed[name], info.shape, info.dtype, t.shape, file)
    return ({renamed[n]: t for n, t in names.items()}, {renamed[n]: file for n, (file, _) in headers.items()},
            {renamed[n]: headers[n][1] for n in names})


def check_layer_count(model_dir: Path, spec: ArchSpec, headers: dict) -> None:
    """config.json's num_hidden_layers against the layers the weights hold (before any per-layer table)."""
    found = max((int(m[1]) + 1 for n in headers if (m := LAYER.match(n))), default=0)
    expect(found == spec.num_layers, f"{model_dir}: expected weights for num_hidden_layers = {spec.num_layers} "
                                     f"layers (config.json), found weights for {found}")


def check_meta(name: str, shape, dtype: str, want: tuple[int, ...], file: Path) -> None:
    """A tensor's shape against config.json (`want`) and its dtype (a numpy name) against DTYPES."""
    expect(tuple(shape) == tuple(want),
           f"{file.name}: tensor {name} expected shape {tuple(want)} from config.json, found {tuple(shape)}")
    expect(dtype in DTYPES, f"{file.name}: tensor {name} expected a float dtype in {sorted(DTYPES)}, found {dtype}")


def check_finite_values(array: np.ndarray, name: str, file: Path) -> None:
    if not all_finite(array):
        raise nonfinite_error(name, file)


def all_finite(array: np.ndarray) -> bool:
    """No NaN/Inf in `array` (any float dtype, bfloat16 included: checked as float32)."""
    return bool(np.isfinite(array.astype(np.float32, copy=False)).all())


def nonfinite_error(name: str, file: Path) -> JaxmergeError:
    return JaxmergeError(f"{file.name}: tensor {name} expected finite values, found NaN or Inf")


def check_one_dtype(kinds: set[str], where: Path) -> None:
    expect(len(kinds) == 1, f"{where}: expected one dtype for all tensors, found {sorted(kinds)}")


def parse_size(size: int | str) -> int:
    """'5GB', '50KB', '200MB' or an int -> bytes (decimal units, as transformers uses)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", str(size).upper())
    expect(match is not None, f"expected a shard size like '5GB' or '50KB', found {size!r}")
    return int(float(match[1]) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match[2]])


def _shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, t in tensors.items():
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    return shards


def save(model: Model, out_dir: str | os.PathLike, *, tokenizer_from: str | os.PathLike | None = None,
         max_shard_size: int | str = "5GB", overwrite: bool = False,
         extra: Callable[[Path], None] | None = None) -> Path:
    """Write a HF directory (config.json, safetensors shards + index, tokenizer files), atomically.
    `extra(tmp)` writes more files (a model card, a recipe) into the temporary directory before it is renamed
    into place, so they appear together with the weights or not at all."""
    _check_params(model.spec, model.params)
    expect(model.layout in LAYOUTS, f"expected a model layout in {LAYOUTS}, found {model.layout!r}")
    tensors = to_hf_tensors(model.spec, model.params, model.layout)
    config = model.spec.to_hf_config()
    config.pop("torch_dtype", None)
    config["dtype"] = model.dtype
    src = Path(tokenizer_from) if tokenizer_from is not None else model.path
    return write_checkpoint(tensors, config, out_dir, tokenizer_from=src, max_shard_size=max_shard_size,
                            overwrite=overwrite, extra=extra)


def write_checkpoint(tensors: dict, config: dict, out_dir: str | os.PathLike, *,
                     tokenizer_from: Path | None = None, max_shard_size: int | str = "5GB", overwrite: bool = False,
                     extra: Callable[[Path], None] | None = None) -> Path:
    """The one writer of HF directories: named tensors (sharded; numpy arrays or deferred ones, made as their
    shard is written), config.json, the tokenizer files found in `tokenizer_from`, and `extra(tmp)`'s files, all
    renamed into place together (jaxmerge.atomic)."""
    max_bytes = parse_size(max_shard_size)
    with atomic_dir(out_dir, overwrite) as tmp:
        _write_weights(tmp, tensors, max_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        if tokenizer_from is not None:
            for name in TOKENIZER_FILES:
                if (Path(tokenizer_from) / name).is_file():
                    shutil.copy2(Path(tokenizer_from) / name, tmp / name)
        if extra is not None:
            extra(tmp)
    return Path(out_dir)


def _write_weights(tmp: Path, tensors: dict[str, np.ndarray], max_bytes: int) -> None:
    """model.safetensors, or HF-named shards of at most `max_bytes` (a lone bigger tensor gets its own) + index."""
    shards = _shards(tensors, max_bytes)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_shard(shard, tmp / fname)
        weight_map.update({n: fname for n in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_shard(tensors: dict, file: Path) -> None:
    """One safetensors file; deferred tensors are made while earlier ones are written (`save_file`, which is
    jaxmerge.stwrite.write: safetensors' bytes, written as the tensors come, failures as the OSError they are)."""
    save_file(tensors, file, metadata={"format": "pt"})


def _check_params(spec: ArchSpec, params: Params) -> None:
    """Refuse params that config.json would contradict, or that `load` could not read back (e.g. float64)."""
    shapes = param_shapes(spec)
    want = {**{k: v for k, v in shapes.items() if k != "layers"},
            **{f"layers.{k}": v for k, v in shapes["layers"].items()}}
    found = {**{k: np.shape(v) for k, v in params.items() if k != "layers"},
             **{f"layers.{k}": np.shape(v) for k, v in params.get("layers", {}).items()}}
    expect(set(found) == set(want), f"expected params {sorted(want)} for this spec, found "
                                    f"{sorted(set(found) ^ set(want))} missing or extra")
    bad = {k: tuple(v) for k, v in found.items() if tuple(v) != tuple(want[k])}
    expect(not bad, f"expected param shapes {({k: want[k] for k in bad})} from the spec, found {bad}")
    kinds = {np.dtype(v.dtype).name for v in _leaves(params)}
    expect(len(kinds) == 1 and kinds <= set(DTYPES),
           f"expected all params in one dtype of {sorted(DTYPES)}, found {sorted(kinds)}")
