"""`VLMSpec`: the static description of a LLaVA checkpoint, read strictly from its config.json.

Keys follow transformers' LlavaConfig and CLIPVisionConfig (and their defaults where a key is absent); a key
that would change the math and is not implemented is refused by name, as the text families do. The language
model's text_config is read by its family record (jaxmerge.families) into an ArchSpec.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from jaxmerge.arch import ArchSpec
from jaxmerge.errors import expect
from jaxmerge.families.keys import INERT_KEYS, positive_int
from jaxmerge.vlm.view import ARCHITECTURES, text_config

TOP_KEYS = frozenset({"text_config", "vision_config", "image_token_index", "image_token_id", "image_seq_length",
                      "projector_hidden_act", "vision_feature_select_strategy", "vision_feature_layer",
                      "multimodal_projector_bias", "tie_word_embeddings", "ignore_index", "vocab_size"})
# LLaVA-Next (any-resolution tiles, spatial unpad, newline); transformers 5 always uses the newline parameter
# (it reads no use_image_newline_parameter), so that key of older configs is inert
NEXT_KEYS = frozenset({"image_grid_pinpoints", "use_image_newline_parameter"})
NEXT_GRID = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # transformers' default
TOP_DEFAULTS = dict(image_token_index=32000, image_seq_length=576, projector_hidden_act="gelu",
                    vision_feature_select_strategy="default", vision_feature_layer=-2, multimodal_projector_bias=True)
VISION_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                   "patch_size")
VISION_KEYS = frozenset({*VISION_REQUIRED, "num_channels", "hidden_act", "layer_norm_eps", "attention_dropout",
                         "dropout", "projection_dim", "initializer_factor", "vocab_size"})
VISION_DEFAULTS = dict(num_channels=3, hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0)
VISION_ACTS = ("quick_gelu", "gelu")
PROJECTOR_ACTS = ("gelu", "quick_gelu")


@dataclasses.dataclass(frozen=True)
class VisionSpec:
    """A CLIP vision transformer: sizes, the square input it takes, its activation."""
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class VLMSpec:
    """Static under jit. `feature_layers`: the vision hidden states the projector reads (index 0 = the embeddings
    after the pre-norm, as transformers counts them), concatenated on the feature axis; `full`: keep the class
    token (strategy "full") rather than drop it ("default"). `config`: the top-level config.json as read (its
    text_config is rewritten from the language model's spec on export)."""
    text: ArchSpec
    vision: VisionSpec
    image_token: int
    feature_layers: tuple[int, ...]
    full: bool
    projector_act: str
    projector_bias: bool
    config: str = "{}"
    grid: tuple[tuple[int, int], ...] = ()  # LLaVA-Next: the any-resolution grid pinpoints (height, width)

    @property
    def tokens_per_tile(self) -> int:
        """Features of one vision-tower input (a LLaVA-1.5 image; a LLaVA-Next tile)."""
        return self.vision.num_patches + (1 if self.full else 0)

    @property
    def tiled(self) -> bool:
        return bool(self.grid)

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[json.loads(self.config)["model_type"]]

    def hf_config(self, text: ArchSpec | None = None, dtype: str | None = None) -> dict[str, Any]:
        """config.json with the language model's text_config from `text` (default: this spec's)."""
        cfg = json.loads(self.config)
        text_cfg = (text or self.text).to_hf_config()
        text_cfg.pop("architectures", None)
        if dtype is not None:
            cfg.pop("torch_dtype", None)
            text_cfg.pop("torch_dtype", None)
            cfg["dtype"] = text_cfg["dtype"] = dtype
        return {**cfg, "text_config": text_cfg}


def read_vlm_config(cfg: dict, where: str) -> VLMSpec:
    """A VLMSpec from a LLaVA config.json (strict; one line naming the key on anything unsupported)."""
    name = cfg.get("model_type")
    expect(cfg.get("architectures") in (None, [ARCHITECTURES[name]]),
           f"{where}: architectures must be [{ARCHITECTURES[name]!r}], found {cfg.get('architectures')!r}")
    known = TOP_KEYS | (NEXT_KEYS if name == "llava_next" else frozenset())
    unknown = sorted(k for k in cfg if k not in known | INERT_KEYS)
    expect(not unknown, f"{where}: expected only {name} config keys known to jaxmerge, found unsupported {unknown}")
    text = ArchSpec.from_hf_config(text_config(cfg, where), f"{where} text_config")
    top = {**TOP_DEFAULTS, **cfg}
    image_token = _image_token(cfg, where)
    vision = read_vision(top.get("vision_config"), f"{where} vision_config")
    tied = bool(top.get("tie_word_embeddings", False)) or text.tie_word_embeddings
    expect(tied == text.tie_word_embeddings, f"{where}: tie_word_embeddings must agree with text_config's "
                                             f"({text.tie_word_embeddings}), found {top.get('tie_word_embeddings')!r}")
    strategy = top["vision_feature_select_strategy"]
    expect(strategy in ("default", "full"), f"{where}: vision_feature_select_strategy must be 'default' or 'full', "
                                            f"found {strategy!r}")
    act = top["projector_hidden_act"]
    expect(act in PROJECTOR_ACTS, f"{where}: projector_hidden_act must be one of {PROJECTOR_ACTS}, found {act!r}")
    grid = _grid(top.get("image_grid_pinpoints") or NEXT_GRID, where) if name == "llava_next" else ()
    expect(not grid or strategy == "default", f"{where}: vision_feature_select_strategy must be 'default' for "
                                              f"llava_next (its tiles reshape without the class token), found "
                                              f"{strategy!r}")
    return VLMSpec(text, vision, image_token, _feature_layers(top["vision_feature_layer"], vision, where),
                   strategy == "full", act, bool(top["multimodal_projector_bias"]), json.dumps(cfg, sort_keys=True),
                   grid)


def _grid(value, where: str) -> tuple[tuple[int, int], ...]:
    ok = isinstance(value, list) and value and all(
        isinstance(p, list) and len(p) == 2 and all(positive_int(x) for x in p) for p in value)
    expect(ok, f"{where}: expected image_grid_pinpoints as a list of [height, width] pairs, found {str(value)[:60]}")
    return tuple((int(h), int(w)) for h, w in value)


def _image_token(cfg: dict, where: str) -> int:
    """image_token_index (transformers also reads it as image_token_id; both given must agree)."""
    ids = {cfg[k] for k in ("image_token_index", "image_token_id") if k in cfg} or {TOP_DEFAULTS["image_token_index"]}
    expect(len(ids) == 1 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids),
           f"{where}: expected one non-negative image_token_index, found {sorted(map(str, ids))}")
    return ids.pop()


def _feature_layers(value: Any, vision: VisionSpec, where: str) -> tuple[int, ...]:
    """vision_feature_layer as non-negative indices into the L + 1 hidden states."""
    layers = [value] if isinstance(value, int) else value
    n = vision.num_layers + 1
    expect(isinstance(layers, list) and layers and all(isinstance(i, int) and -n <= i < n for i in layers),
           f"{where}: vision_feature_layer must be an int or a list of ints in [{-n}, {n - 1}], found {value!r}")
    return tuple(i % n for i in layers)


def read_vision(cfg: Any, where: str) -> VisionSpec:
    expect(isinstance(cfg, dict), f"{where}: expected a mapping, found {type(cfg).__name__}")
    expect(cfg.get("model_type") == "clip_vision_model",
           f"{where}: model_type must be 'clip_vision_model' (a CLIP vision tower), found {cfg.get('model_type')!r}")
    unknown = sorted(k for k in cfg if k not in VISION_KEYS | INERT_KEYS)
    expect(not unknown, f"{where}: expected only CLIP vision config keys known to jaxmerge, found unsupported "
                        f"{unknown}")
    missing = [k for k in VISION_REQUIRED if k not in cfg]
    expect(not missing, f"{where}: expected keys {missing}, found them missing")
    cfg = {**VISION_DEFAULTS, **cfg}
    sizes = (*VISION_REQUIRED, "num_channels")
    bad = {k: cfg[k] for k in sizes if not positive_int(cfg[k])}
    expect(not bad, f"{where}: expected positive integers, found {bad}")
    expect(cfg["hidden_act"] in VISION_ACTS, f"{where}: hidden_act must be one of {VISION_ACTS}, found "
                                             f"{cfg['hidden_act']!r}")
    expect(cfg["attention_dropout"] in (0, 0.0, None), f"{where}: attention_dropout must be 0, found "
                                                       f"{cfg['attention_dropout']!r}")
    expect(cfg["image_size"] % cfg["patch_size"] == 0 and cfg["hidden_size"] % cfg["num_attention_heads"] == 0,
           f"{where}: expected image_size a multiple of patch_size and hidden_size of num_attention_heads, found "
           f"{cfg['image_size']}, {cfg['patch_size']}, {cfg['hidden_size']}, {cfg['num_attention_heads']}")
    return VisionSpec(int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"]),
                      int(cfg["num_attention_heads"]), int(cfg["image_size"]), int(cfg["patch_size"]),
                      int(cfg["num_channels"]), cfg["hidden_act"], float(cfg["layer_norm_eps"]))
