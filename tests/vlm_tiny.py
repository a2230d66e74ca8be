"""Tiny random LLaVA checkpoints with a processor (no network): the inputs of the VLM oracle tests.

The language model is a tests/tiny.py Llama (vocab 97, char tokenizer of tests/fitness_tiny.py) whose last id
is the "<image>" token; the vision tower a CLIP ViT of a few layers on 16x16 (or other) images. Norms and biases
are randomised so that errors in their handling show. `text_sibling` saves the VLM's language model, perturbed,
as a text LlamaForCausalLM of the same shape: a text fine-tune of the same base, which is what merging is for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

from tests.fitness_tiny import CHARS
from tests.tiny import BASE, CONFIGS

IMAGE_TOKEN = 96


def char_tokenizer_with_image(vocab_size: int = 97):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    for i in range(len(vocab), vocab_size - 1):
        vocab[f"<x{i}>"] = i
    vocab["<image>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken("<image>", special=True, normalized=False)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>",
                                                extra_special_tokens={"image_token": "<image>"})


def vlm_config(image_size=16, patch_size=4, feature_layer=-2, strategy="default", vision_layers=3, vision=None,
               family="llama", **text):
    sizes = {"hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 2, **(vision or {})}
    vision = transformers.CLIPVisionConfig(num_hidden_layers=vision_layers, image_size=image_size,
                                           patch_size=patch_size, projection_dim=8, **sizes)
    text_cfg = CONFIGS[family](**{**BASE, **text})
    tokens = (image_size // patch_size) ** 2 + (strategy == "full")
    return transformers.LlavaConfig(vision_config=vision, text_config=text_cfg, image_token_index=IMAGE_TOKEN,
                                    image_seq_length=tokens, vision_feature_layer=feature_layer,
                                    vision_feature_select_strategy=strategy)


def make_tiny_vlm(path: Path, seed: int = 0, **config) -> Path:
    """Save a random LLaVA, its tokenizer and processor to `path`."""
    torch.manual_seed(seed)
    cfg = vlm_config(**config)
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias") or "class_embedding" in name:
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed" in name or "position" in name:
                p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(path)
    processor(cfg).save_pretrained(str(path))
    return Path(path)


def processor(cfg):
    size = cfg.vision_config.image_size
    images = transformers.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return transformers.LlavaProcessor(images, char_tokenizer_with_image(), patch_size=cfg.vision_config.patch_size,
                                       vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                       num_additional_image_tokens=1)


def text_sibling(vlm_dir: Path, path: Path, seed: int = 1, scale: float = 0.02) -> Path:
    """The VLM's language model plus N(0, scale) noise, saved as a text LlamaForCausalLM with the tokenizer."""
    torch.manual_seed(seed)
    vlm = transformers.AutoModelForImageTextToText.from_pretrained(vlm_dir, local_files_only=True)
    text = transformers.LlamaForCausalLM(vlm.config.text_config).eval()
    state = {f"model.{k}": v for k, v in vlm.model.language_model.state_dict().items()}
    text.load_state_dict({**state, "lm_head.weight": vlm.lm_head.weight}, strict=True)
    with torch.no_grad():
        for p in text.parameters():
            p.add_(torch.randn_like(p) * scale)
    text.save_pretrained(path)
    char_tokenizer_with_image().save_pretrained(str(path))
    return Path(path)


def vlm_and_sibling(root: Path, **config) -> tuple[Path, Path]:
    """A tiny random LLaVA at root/vlm and its text sibling (scale 0.05) at root/ja: the evolve tests' pair."""
    vlm = make_tiny_vlm(root / "vlm", **config)
    return vlm, text_sibling(vlm, root / "ja", scale=0.05)


def images(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Random RGB uint8 images [H, W, 3] (processor input)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def make_tiny_llava_next(path: Path, seed: int = 0, grid=((16, 32), (32, 16), (32, 32)), **config) -> Path:
    """A random LLaVA-Next (tiles of the vision tower's size on an any-resolution grid, image newline) with its
    processor."""
    torch.manual_seed(seed)
    base = vlm_config(**config)
    cfg = transformers.LlavaNextConfig(vision_config=base.vision_config, text_config=base.text_config,
                                       image_token_index=IMAGE_TOKEN, image_grid_pinpoints=[list(g) for g in grid],
                                       vision_feature_layer=base.vision_feature_layer,
                                       vision_feature_select_strategy=base.vision_feature_select_strategy)
    model = transformers.LlavaNextForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias") or "class_embedding" in name or "newline" in name:
                p.copy_(0.3 * torch.randn_like(p))
            elif "embed" in name or "position" in name:
                p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(path)
    size = cfg.vision_config.image_size
    images = transformers.LlavaNextImageProcessorPil(size={"shortest_edge": size},
                                                     crop_size={"height": size, "width": size},
                                                     image_grid_pinpoints=[list(g) for g in grid])
    transformers.LlavaNextProcessor(images, char_tokenizer_with_image(), patch_size=cfg.vision_config.patch_size,
                                    vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                    num_additional_image_tokens=1).save_pretrained(str(path))
    return Path(path)
