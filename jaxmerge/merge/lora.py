"""LoRA sources (`model: PATH+ADAPTER`, mergekit's reference): a PEFT adapter folded into its model once at load,
in numpy, as PEFT's merge_and_unload folds it (the oracle of tests/test_merge_lora.py).

    W' = W + (B @ A) * scale          (embeddings: W' = W + (B @ A).T * scale; lora_embedding_A/B)
    scale = alpha / r  (alpha / sqrt(r) with use_rslora); r and alpha per module from rank_pattern /
    alpha_pattern (a key matches a module whose name ends in it at a dot boundary, first key first, as PEFT)

The delta is computed in float32 and added to W in float32, rounded once to W's stored dtype (PEFT upcasts 16-bit
adapters on CPU and adds in place); the folded model is then read in the recipe's dtype, like any other. Only
plain LoRA in safetensors (adapter_config.json + adapter_model.safetensors): DoRA, LoRA biases and
modules_to_save are refused by name, and so is a tensor the model has no place for or whose shape does not fit.

    model = load_ref("path/to/model+path/to/adapter", dtype)   # a jaxmerge.io.Model, its LoRA folded in
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.io import DTYPES, Model, load, open_safetensors, resolve
from jaxmerge.params import hf_names, piece_index

PREFIX = "base_model.model."
PAIR = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|base_layer)(\.weight)?")
PARTS = {"lora_A": "A", "lora_B": "B", "lora_embedding_A": "A", "lora_embedding_B": "B", "base_layer": "W"}


def split(ref: str) -> tuple[str, str | None]:
    """(model, adapter) of a reference: mergekit splits it at its one '+'."""
    parts = ref.split("+")
    expect(len(parts) <= 2, f"expected a model reference MODEL or MODEL+LORA, found {ref!r} (two '+')")
    return parts[0], (parts[1] if len(parts) == 2 else None)


def _config(adapter: Path, where: str) -> dict:
    file = adapter / "adapter_config.json"
    expect(file.is_file(), f"{where}: expected a PEFT adapter (adapter_config.json) in {adapter}, found none")
    cfg = json.loads(file.read_text())
    expect(cfg.get("peft_type", "LORA") == "LORA", f"{where}: expected a LoRA adapter, found peft_type "
                                                   f"{cfg.get('peft_type')!r}")
    for key, plain in (("use_dora", not cfg.get("use_dora")), ("bias", cfg.get("bias", "none") == "none"),
                       ("lora_bias", not cfg.get("lora_bias")), ("modules_to_save", not cfg.get("modules_to_save")),
                       ("layer_replication", not cfg.get("layer_replication")),
                       ("target_parameters", not cfg.get("target_parameters"))):
        expect(plain, f"{where}: adapter_config.json {key} = {cfg.get(key)!r} is not supported (plain LoRA only)")
    expect(isinstance(cfg.get("r"), int) and cfg["r"] > 0, f"{where}: adapter_config.json r: expected a positive "
                                                            f"rank, found {cfg.get('r')!r}")
    return cfg


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key the module name ends with (at a dot)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def scale(cfg: dict, module: str) -> float:
    r = pattern_value(cfg.get("rank_pattern"), module, cfg["r"])
    alpha = pattern_value(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", 8))
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def _pairs(adapter: Path, where: str) -> dict[str, dict[str, np.ndarray]]:
    """module name -> {"A", "B", "embedding": bool, and "W" where PEFT saved the module's whole weight (it does for
    embedding layers it targets: loading the adapter puts that weight in place)} from adapter_model.safetensors."""
    file = adapter / "adapter_model.safetensors"
    expect(file.is_file(), f"{where}: expected adapter_model.safetensors in {adapter} (safetensors only), found "
                           "none")
    pairs: dict[str, dict] = {}
    with open_safetensors(file) as handle:
        for key in handle.keys():
            name = key[len(PREFIX):] if key.startswith(PREFIX) else key
            match = PAIR.fullmatch(name)
            expect(match is not None, f"{where}: expected only LoRA A/B tensors in the adapter, found {key}")
            entry = pairs.setdefault(match["module"], {})
            entry[PARTS[match["part"]]] = handle.get_tensor(key)
            entry["embedding"] = entry.get("embedding", False) or "embedding" in match["part"]
    for module, entry in pairs.items():
        expect("A" in entry and "B" in entry, f"{where}: expected lora_A and lora_B of {module}, found one")
    return pairs


def fold(model: Model, adapter: Path, where: str) -> Model:
    """`model` with the adapter at `adapter` merged into its weights (module doc)."""
    cfg, names = _config(adapter, where), hf_names(model.spec)
    params = {k: v for k, v in model.params.items() if k != "layers"}
    layers = {k: np.array(v) for k, v in model.params["layers"].items()}
    for module, entry in _pairs(adapter, where).items():
        name = f"{module}.weight"
        expect(name in names, f"{where}: the adapter's {module} names no weight of this {model.spec.model_type} "
                              "model")
        t = names[name]
        weight = params[t.leaf] if t.section == "global" else layers[t.leaf][t.layer][piece_index(t)]
        if "W" in entry:
            expect(entry["W"].shape == weight.shape, f"{where}: expected the adapter's {module} weight to be "
                                                     f"{tuple(weight.shape)} like the model's, found {entry['W'].shape}")
            weight = entry["W"].astype(weight.dtype)
        a, b = entry["A"].astype(np.float32), entry["B"].astype(np.float32)
        expect(a.ndim == 2 and b.ndim == 2 and b.shape[1] == a.shape[0],
               f"{where}: expected lora_B [out, r] and lora_A [r, in] of {module}, found {b.shape} and {a.shape}")
        delta = (b @ a).T if entry["embedding"] else b @ a
        expect(delta.shape == weight.shape, f"{where}: expected the LoRA update of {module} to be "
                                            f"{tuple(weight.shape)} like the model's weight, found {delta.shape}")
        merged = (weight.astype(np.float32) + delta * np.float32(scale(cfg, module))).astype(weight.dtype)
        if t.section == "global":
            params[t.leaf] = merged
        else:
            layers[t.leaf][t.layer][piece_index(t)] = merged
    return dataclasses.replace(model, params={**params, "layers": layers})


def load_ref(ref: str, dtype: str | None = None, provided: dict | None = None) -> Model:
    """Load a model reference: MODEL as `jaxmerge.io.load(..., lazy=True)` reads it (or as `provided` holds it: a
    Model, or the directory to read), MODEL+LORA with the adapter folded in MODEL's stored dtype first (as mergekit merges it
    before reading), then in `dtype`."""
    path, adapter = split(ref)
    given = (provided or {}).get(path)
    if adapter is None and not isinstance(given, Model):
        return load(path if given is None else given, dtype=dtype, lazy=True)
    model = given if isinstance(given, Model) else load(path if given is None else given)
    if adapter is not None:
        model = fold(model, resolve(adapter), f"LoRA {adapter} (for {path})")
    return model if dtype is None else cast(model, dtype)


def cast(model: Model, dtype: str) -> Model:
    """`model` with every array in `dtype` (numpy)."""
    to = lambda x: np.asarray(x).astype(DTYPES[dtype])
    params = {k: to(v) for k, v in model.params.items() if k != "layers"}
    return dataclasses.replace(model, params={**params, "layers": {k: to(v) for k, v in
                                                                   model.params["layers"].items()}})
