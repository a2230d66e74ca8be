"""Tiny random Hugging Face models saved to disk (no network): the inputs every oracle test starts from."""
from __future__ import annotations

from pathlib import Path

import torch
import transformers

CONFIGS = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}
BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=256, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_config(family: str = "llama", **overrides):
    return CONFIGS[family](**{**BASE, **overrides})


def make_tiny_model(path: Path, family: str = "llama", seed: int = 0, dtype=torch.float32, perturb_from=None,
                    scale: float = 0.02, **overrides) -> Path:
    """Save a random model. With `perturb_from` (a path), start from that model and add N(0, scale) noise:
    a 'fine-tune' of a shared base, which is what merging is for."""
    torch.manual_seed(seed)
    if perturb_from is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(perturb_from, dtype=torch.float32)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * scale)
    else:
        model = transformers.AutoModelForCausalLM.from_config(make_config(family, **overrides))
        with torch.no_grad():  # norms at 1 and biases at 0 would hide errors in their handling; randomise them
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                elif name.endswith(".bias"):
                    p.copy_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    model.save_pretrained(path)
    return Path(path)


def hf_logits(path: Path, tokens, mask=None, positions=None):
    """Oracle: transformers (PyTorch) float32 logits as numpy."""
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        kw = {}
        if mask is not None:
            kw["attention_mask"] = torch.as_tensor(mask)
        if positions is not None:
            kw["position_ids"] = torch.as_tensor(positions)
        return model(torch.as_tensor(tokens), **kw).logits.float().numpy()
