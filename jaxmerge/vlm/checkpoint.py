"""LLaVA / LLaVA-Next checkpoints <-> `VLM`: the language model as a text `Model`, the vision tower and projector
as they are.

Loading reads the language model through jaxmerge.io.load (a VLM directory reads as its language model there,
jaxmerge.vlm.view) and the vision tower and projector tensor by tensor, each checked against the config
(name, shape, dtype, finite). Saving writes what transformers' save_pretrained writes for
LlavaForConditionalGeneration (language_model.model.*, language_model.lm_head.*, vision_tower.*,
multi_modal_projector.*), the config with the language model's text_config, the tokenizer and the processor
files, in one atomic directory.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.io import DTYPES, Model, check_finite_values, check_meta, load, open_safetensors, resolve, \
    write_checkpoint
from jaxmerge.jsonfile import read_json_object
from jaxmerge.params import Params, to_hf_tensors
from jaxmerge.vlm.config import VLMSpec, read_vlm_config
from jaxmerge.vlm.view import MAX_CONFIG, is_vlm_dir, parts
from jaxmerge.vlm.vision import projector_shapes, vision_shapes
from jaxmerge.weights import tensor_headers

PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "chat_template.json", "chat_template.jinja")
SAVE_PREFIX = {"text": "language_model.", "vision": "vision_tower.", "projector": "multi_modal_projector."}


@dataclasses.dataclass(frozen=True)
class Tower:
    """What a VLM adds to its language model, never merged: the vision tower and projector (local tensor names,
    vision layers stacked under "layers"), and where they came from."""
    spec: VLMSpec
    vision: Params
    projector: Params
    path: Path
    top: Params = dataclasses.field(default_factory=dict)  # LLaVA-Next: {"image_newline": [D]}


@dataclasses.dataclass(frozen=True)
class VLM:
    tower: Tower
    lm: Model

    @property
    def spec(self) -> VLMSpec:
        return self.tower.spec


def read_spec(model_dir: Path) -> VLMSpec:
    file = Path(model_dir) / "config.json"
    return read_vlm_config(read_json_object(file, "config.json", max_bytes=MAX_CONFIG), str(file))


def load_vlm(path_or_repo_id, dtype: str | None = None) -> VLM:
    model_dir = resolve(path_or_repo_id)
    expect(is_vlm_dir(model_dir), f"expected a vision-language checkpoint (config.json model_type 'llava' or "
                                  f"'llava_next') at "
                                  f"{model_dir}, found a text model")
    return VLM(load_tower(model_dir, dtype), load(model_dir, dtype=dtype))


def describe(model_dir: Path | None) -> str:
    """How an error names a model: a VLM's language model says whose it is (None: a model in memory)."""
    if model_dir is not None and is_vlm_dir(model_dir):
        return f"{model_dir} (the language model of its {read_spec(model_dir).architecture})"
    return str(model_dir)


def the_tower(paths: dict[str, Path | None], dtype: str | None = None) -> Tower | None:
    """The vision tower of the one VLM among a merge's models (None: all are text models). Two VLMs are refused:
    only one tower can be kept, and dropping the other silently would be wrong."""
    vlms = [ref for ref, path in paths.items() if path is not None and is_vlm_dir(path)]
    expect(len(vlms) <= 1, f"expected at most one vision-language model among the models (its vision tower and "
                           f"projector are kept unchanged), found {len(vlms)}: {', '.join(vlms)}")
    return load_tower(paths[vlms[0]], dtype) if vlms else None


def load_tower(model_dir: Path, dtype: str | None = None) -> Tower:
    """The vision tower and projector of a VLM directory, every tensor checked."""
    spec = read_spec(model_dir)
    headers = tensor_headers(model_dir)
    found = parts(headers, model_dir)
    vision = _read_part(found["vision"], _flat(vision_shapes(spec.vision)), headers, model_dir, dtype)
    layers = {k: np.stack([vision.pop(f"encoder.layers.{i}.{k}") for i in range(spec.vision.num_layers)])
              for k in vision_shapes(spec.vision)["layers"]}
    projector = _read_part(found["projector"], projector_shapes(spec), headers, model_dir, dtype)
    top = _read_part(found["top"], {"image_newline": (spec.text.hidden_size,)} if spec.tiled else {}, headers,
                     model_dir, dtype)
    return Tower(spec, {**vision, "layers": layers}, projector, model_dir, top)


def _flat(shapes: dict) -> dict[str, tuple[int, ...]]:
    """Per-layer shapes under their stored names (encoder.layers.{i}.*)."""
    out = {k: v for k, v in shapes.items() if k != "layers"}
    for k, (n, *shape) in shapes["layers"].items():
        out.update({f"encoder.layers.{i}.{k}": tuple(shape) for i in range(n)})
    return out


def _read_part(stored: dict[str, str], want: dict, headers, model_dir: Path, dtype) -> dict[str, np.ndarray]:
    missing = [k for k in want if k not in stored]
    if missing:
        raise JaxmergeError(f"{model_dir}: expected tensor {missing[0]} of the vision tower / projector "
                            "(config.json says so), found it missing")
    extra = [stored[k] for k in stored if k not in want]
    if extra:
        raise JaxmergeError(f"{model_dir}: expected only the tensors config.json describes, found unexpected "
                            f"{extra[0]}")
    out = {}
    for local, name in stored.items():
        file, info = headers[name]
        check_meta(name, info.shape, info.dtype, want[local], file)
        with open_safetensors(file) as f:
            array = f.get_tensor(name)
        check_finite_values(array, name, file)
        out[local] = array if dtype is None else array.astype(DTYPES[dtype])
    return out


def vlm_tensors(tower: Tower, lm: Model) -> dict[str, np.ndarray]:
    """Every tensor of the VLM checkpoint under the names transformers saves; the tower in the LM's dtype."""
    dtype = np.dtype(DTYPES[lm.dtype])
    out = {SAVE_PREFIX["text"] + n: t for n, t in to_hf_tensors(lm.spec, lm.params, lm.layout).items()}
    for k, v in tower.vision.items():
        if k != "layers":
            out[SAVE_PREFIX["vision"] + k] = np.asarray(v).astype(dtype, copy=False)
    for k, v in tower.vision["layers"].items():
        out.update({f"{SAVE_PREFIX['vision']}encoder.layers.{i}.{k}": np.asarray(v[i]).astype(dtype, copy=False)
                    for i in range(v.shape[0])})
    out.update({SAVE_PREFIX["projector"] + k: np.asarray(v).astype(dtype, copy=False)
                for k, v in tower.projector.items()})
    out.update({k: np.asarray(v).astype(dtype, copy=False) for k, v in tower.top.items()})
    return out


def check_fits(tower: Tower, lm: Model) -> None:
    """The projector writes the language model's hidden size; the image token is one of its ids."""
    spec = lm.spec
    expect(spec.hidden_size == tower.spec.text.hidden_size, f"expected the language model to keep hidden_size = "
           f"{tower.spec.text.hidden_size} (the projector of {tower.path} writes it), found {spec.hidden_size}")
    expect(tower.spec.image_token < spec.vocab_size, f"expected the image token {tower.spec.image_token} of "
           f"{tower.path} inside the vocabulary, found vocab_size {spec.vocab_size}")


def save_vlm(tower: Tower, lm: Model, out_dir, *, tokenizer_from: Path | None = None,
             max_shard_size: int | str = "5GB", overwrite: bool = False,
             extra: Callable[[Path], None] | None = None) -> Path:
    """A complete LLaVA checkpoint: `lm` as its language model, `tower` unchanged, the processor files of the
    tower's directory and the tokenizer of `tokenizer_from` (None: no tokenizer, as --no-copy-tokenizer asks)."""
    check_fits(tower, lm)
    config = tower.spec.hf_config(lm.spec, lm.dtype)

    def more(tmp: Path) -> None:
        for name in PROCESSOR_FILES:
            if (tower.path / name).is_file() and not (tmp / name).exists():
                shutil.copy2(tower.path / name, tmp / name)
        if extra is not None:
            extra(tmp)
    return write_checkpoint(vlm_tensors(tower, lm), config, out_dir, tokenizer_from=tokenizer_from,
                            max_shard_size=max_shard_size, overwrite=overwrite, extra=more)
