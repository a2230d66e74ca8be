"""Pixels and token ids exactly as transformers' processor makes them (AutoProcessor of the VLM directory).

The processor expands each "<image>" of a prompt into the model's image tokens and resizes, crops and
normalises the image; asking for numpy tensors keeps torch out of the run. Loaded offline only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmerge.errors import JaxmergeError


def load_processor(model_dir: Path):
    from transformers import AutoProcessor
    try:
        return AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # a missing or unreadable processor file: one line
        raise JaxmergeError(f"expected a processor (preprocessor / processor config and tokenizer) in {model_dir} "
                            f"that transformers' AutoProcessor loads offline, found: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def encode(processor, image, prompt: str) -> tuple[np.ndarray, list[int], tuple[int, int] | None]:
    """(pixels [C, H, W], or LLaVA-Next's tiles [P, C, H, W]; prompt token ids with the image tokens expanded;
    the image's (height, width) where the processor reports it) of one image and prompt."""
    out = processor(images=[image], text=[prompt], return_tensors="np")
    size = tuple(int(v) for v in out["image_sizes"][0]) if "image_sizes" in out else None
    return np.asarray(out["pixel_values"][0], np.float32), [int(t) for t in out["input_ids"][0]], size
