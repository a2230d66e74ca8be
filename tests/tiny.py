"""Tiny random Hugging Face models saved to disk (no network): the inputs every oracle test starts from."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.numpy import save_file

CONFIGS = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
           "gemma": transformers.GemmaConfig, "gemma2": transformers.Gemma2Config,
           "gemma3_text": transformers.Gemma3TextConfig, "phi3": transformers.Phi3Config,
           "mixtral": transformers.MixtralConfig, "qwen2_moe": transformers.Qwen2MoeConfig,
           "qwen3_moe": transformers.Qwen3MoeConfig}
BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=256, rms_norm_eps=1e-5,
            bos_token_id=1, eos_token_id=2, pad_token_id=0)
OFFSET_NORMS = ("gemma", "gemma2", "gemma3_text")  # (1 + w) gains: w is randomised around 0, not 1
WINDOW = 5  # every sliding window below: oracle prompts are several windows long
# One tiny config per family with every feature of the family switched on (values chosen to bite at these
# sizes: soft-caps below the logit scale, a query scale unlike head_dim, RoPE bases far apart, longrope's
# original length shorter than the prompts, a window shorter than them, sliding and full layers mixed).
FULL_FEATURES = {
    "gemma": dict(attention_bias=True),
    "gemma2": dict(attention_bias=True, query_pre_attn_scalar=12, attn_logit_softcapping=2.0,
                   final_logit_softcapping=3.0, sliding_window=WINDOW, tie_word_embeddings=False),
    "gemma3_text": dict(query_pre_attn_scalar=12, final_logit_softcapping=3.0, sliding_window=WINDOW,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}),
    "phi3": dict(sliding_window=2 * WINDOW, max_position_embeddings=64, original_max_position_embeddings=16,
                 rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                  "short_factor": [1.0, 1.5], "long_factor": [3.0, 7.0]}),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=48, sliding_window=WINDOW),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, intermediate_size=48,
                      shared_expert_intermediate_size=40, use_sliding_window=True, sliding_window=WINDOW,
                      max_window_layers=2),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, intermediate_size=48,
                      norm_topk_prob=True, use_sliding_window=True, sliding_window=WINDOW),
}


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
        offset = model.config.model_type in OFFSET_NORMS
        with torch.no_grad():  # norms at 1 and biases at 0 would hide errors in their handling; randomise them
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_((0 if offset else 1) + 0.1 * torch.randn_like(p))
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


# ---- broken checkpoints: each breaker edits a copy in place and returns a word the error must name ----

def _config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _tensors(path: Path, edit) -> None:
    file = path / "model.safetensors"
    with safe_open(str(file), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(file), metadata={"format": "pt"})


def _no_weights(path):
    (path / "model.safetensors").unlink()
    return "safetensors"


def _pickle_only(path):
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not really a pickle")
    return "convert"


def _truncated(path):
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return "model.safetensors"


def _shape_mismatch(path):
    _config(path, intermediate_size=48)
    return "mlp.gate_proj.weight"


def _missing_tensor(path):
    _tensors(path, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    return "model.layers.1.self_attn.k_proj.weight"


def _unexpected_tensor(path):
    _tensors(path, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
    return "model.layers.0.mlp.extra.weight"


def _nan(path):
    def poison(t):
        t["model.layers.2.mlp.up_proj.weight"][1, 2] = np.nan
    _tensors(path, poison)
    return "model.layers.2.mlp.up_proj.weight"


def _architecture(path):
    _config(path, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"])
    return "model_type"


def _unknown_key(path):
    _config(path, attn_logit_softcapping=50.0)
    return "attn_logit_softcapping"


def _rope_type(path):
    _config(path, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    return "dynamic"


BREAKERS = {"no weights": _no_weights, "pickle only": _pickle_only, "truncated": _truncated,
            "shape mismatch": _shape_mismatch, "missing tensor": _missing_tensor,
            "unexpected tensor": _unexpected_tensor, "nan": _nan, "architecture": _architecture,
            "unknown key": _unknown_key, "rope type": _rope_type}


def broken_copy(src: Path, dst: Path, how: str) -> str:
    """Copy a saved tiny model to `dst` and break it as BREAKERS[how] says; returns the name the error must say."""
    shutil.copytree(src, dst)
    return BREAKERS[how](Path(dst))
