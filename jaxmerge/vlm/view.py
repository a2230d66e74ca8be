"""A VLM checkpoint seen as its language model: the text config and the text names of its LM tensors.

transformers writes a LLaVA's tensors under prefixes (language_model.model.*, language_model.lm_head.*,
vision_tower.*, multi_modal_projector.*; checkpoints from transformers 4 spell the vision tower
vision_tower.vision_model.*, and the in-memory v5 names model.language_model.* etc. load too). `text_names`
maps each LM tensor's text-model name (model.layers.0.self_attn.q_proj.weight, lm_head.weight) to the name it is
stored under, so the text loaders (jaxmerge.io, jaxmerge.evolve.sliced) read a VLM's language model exactly as
they read a text checkpoint. `parts` sorts every stored name into language model, vision tower or projector
and refuses anything else by name.
"""
from __future__ import annotations

from pathlib import Path

from jaxmerge.errors import expect
from jaxmerge.families.keys import COMMON_KEYS
from jaxmerge.files import MB
from jaxmerge.jsonfile import read_json_object

MAX_CONFIG = 4 * MB
ARCHITECTURES = {"llava": "LlavaForConditionalGeneration",  # model_type -> transformers class
                 "llava_next": "LlavaNextForConditionalGeneration"}
ROPE_KEYS = frozenset({"rope_theta", "rope_scaling", "rope_parameters"})
TOP_NAMES = {"image_newline": "image_newline", "model.image_newline": "image_newline"}  # LLaVA-Next's row marker
LM_PREFIXES = (("language_model.model.", "model."), ("model.language_model.", "model."),
               ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))
VISION_PREFIXES = ("vision_tower.vision_model.", "model.vision_tower.vision_model.", "model.vision_tower.",
                   "vision_tower.")
PROJECTOR_PREFIXES = ("multi_modal_projector.", "model.multi_modal_projector.")


def is_vlm_config(cfg: dict) -> bool:
    return cfg.get("model_type") in ARCHITECTURES


def text_config(cfg: dict, where: str) -> dict:
    """The language model's config.json, as its family record reads it. Checkpoints such as
    llava-hf/llava-1.5-7b-hf store only the keys that differ from the text class's defaults; the missing size and
    RoPE keys are filled from transformers' own config class of that model_type, as transformers fills them."""
    text = cfg.get("text_config")
    expect(isinstance(text, dict), f"{where}: expected a text_config mapping in a {cfg.get('model_type')} config, "
                                   f"found {type(text).__name__}")
    missing = [k for k in COMMON_KEYS - ROPE_KEYS if k not in text]
    missing += [] if ROPE_KEYS & text.keys() else ["rope_parameters"]  # RoPE as given, else the class's
    if not missing:
        return text
    from transformers import AutoConfig
    try:
        defaults = AutoConfig.for_model(str(text.get("model_type"))).to_dict()
    except (KeyError, ValueError):  # an unknown model_type: the family registry refuses it by name
        return text
    return {**{k: defaults[k] for k in missing if defaults.get(k) is not None}, **text}


def read_config(model_dir: Path) -> dict | None:
    file = Path(model_dir) / "config.json"
    return read_json_object(file, "config.json", max_bytes=MAX_CONFIG) if file.is_file() else None


def is_vlm_dir(model_dir: Path) -> bool:
    cfg = read_config(model_dir)
    return cfg is not None and is_vlm_config(cfg)


def language_config(cfg: dict, where: str) -> tuple[dict, str]:
    """(the config a family reads, where it came from): a VLM's text_config, else the config itself."""
    return (text_config(cfg, where), f"{where} text_config") if is_vlm_config(cfg) else (cfg, where)


def _strip(name: str, prefixes) -> str | None:
    return next((name[len(p):] for p in prefixes if name.startswith(p)), None)


def parts(names, where) -> dict[str, dict[str, str]]:
    """{"text": {text name: stored}, "vision": {vision-tower name: stored}, "projector": {...: stored},
    "top": {"image_newline": stored} (LLaVA-Next)}."""
    out: dict[str, dict[str, str]] = {"text": {}, "vision": {}, "projector": {}, "top": {}}
    for name in names:
        lm = next((new + name[len(old):] for old, new in LM_PREFIXES if name.startswith(old)), None)
        vision, projector = _strip(name, VISION_PREFIXES), _strip(name, PROJECTOR_PREFIXES)
        found = (("text", lm), ("vision", vision), ("projector", projector), ("top", TOP_NAMES.get(name)))
        part, local = next(((p, n) for p, n in found if n is not None), (None, None))
        expect(part is not None, f"{where}: expected only language-model, vision-tower and projector tensors in a "
                                 f"VLM checkpoint, found unexpected {name}")
        expect(local not in out[part], f"{where}: expected each tensor once, found {name} and "
                                       f"{out[part].get(local)} for the same {part} tensor")
        out[part][local] = name
    return out


def text_names(model_dir: Path, names) -> dict[str, str]:
    """text-model name -> stored name of the tensors a text loader reads (identity for a text checkpoint)."""
    if not is_vlm_dir(model_dir):
        return {n: n for n in names}
    return parts(names, model_dir)["text"]
