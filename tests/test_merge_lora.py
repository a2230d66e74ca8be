"""LoRA sources (`model: PATH+ADAPTER`): the adapter folded in at load equals PEFT's own merge_and_unload (the
oracle, <= 1e-5 relative, float32), with rank_pattern / alpha_pattern, rsLoRA and an embedding adapter; a merge
with a LoRA source equals mergekit 0.1.5's (which folds with PEFT too); adapters that do not fit are refused
with one line, exit 2, nothing written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from jaxmerge.cli import main
from tests.merge_oracle import jaxmerge_merge, make_family, mergekit_merge, read_tensors, worst_relative

TOL = 1e-5
TARGETS = ["q_proj", "v_proj", "down_proj", "embed_tokens", "lm_head"]


def make_adapter(model_dir, out, seed: int, **config):
    """A PEFT LoRA adapter on `model_dir` with random A and B (PEFT starts B at zero), saved as safetensors."""
    import peft
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = peft.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, **config})
    wrapped = peft.get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    wrapped.save_pretrained(out, safe_serialization=True)
    return out


def peft_merged(model_dir, adapter) -> dict[str, np.ndarray]:
    """PEFT's merge_and_unload of the adapter into the model: its state dict as numpy."""
    import peft
    torch.set_num_threads(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach().numpy() for k, v in merged.state_dict().items()}


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    fam = make_family(root, n=2)
    plain = make_adapter(fam["ft0"], root / "plain", seed=1)
    patterned = make_adapter(fam["ft0"], root / "patterned", seed=2, r=8, lora_alpha=16,
                             rank_pattern={"down_proj": 2, "layers.1.self_attn.q_proj": 6},
                             alpha_pattern={"v_proj": 3, "embed_tokens": 5})
    rs = make_adapter(fam["ft0"], root / "rslora", seed=3, use_rslora=True, target_modules=["o_proj", "up_proj"])
    return fam, {"plain": plain, "patterned": patterned, "rslora": rs}


def _folded(fam, adapter, tmp_path):
    recipe = dict(merge_method="passthrough", dtype="float32", models=[dict(model=f"{fam['ft0']}+{adapter}")])
    return jaxmerge_merge(recipe, tmp_path / "jaxmerge")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "patterned", "rslora"])
def test_folded_adapter_equals_peft_merge_and_unload(lora, tmp_path, name):
    fam, adapters = lora
    ours, theirs = _folded(fam, adapters[name], tmp_path), peft_merged(fam["ft0"], adapters[name])
    tuned = read_tensors(fam["ft0"])
    worst, where = worst_relative(ours, {k: v for k, v in theirs.items() if k in ours})
    assert worst <= TOL, f"{where}: {worst:.2e}"
    changed = [k for k in ours if not np.array_equal(ours[k], tuned[k])]
    want = ("embed_tokens", "lm_head", "q_proj", "v_proj", "down_proj") if name != "rslora" else ("o_proj", "up_proj")
    assert changed and all(any(t in k for t in want) for k in changed)


@pytest.mark.slow
def test_a_merge_with_a_lora_source_equals_mergekit(lora, tmp_path):
    fam, adapters = lora
    recipe = dict(merge_method="task_arithmetic", base_model=fam["base"], dtype="float32", models=[
        dict(model=f"{fam['ft0']}+{adapters['patterned']}", parameters=dict(weight=0.7)),
        dict(model=fam["ft1"], parameters=dict(weight=0.4))])
    theirs = mergekit_merge(recipe, tmp_path / "mergekit", lora_merge_cache=str(tmp_path / "cache"))
    ours = jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    worst, where = worst_relative(ours, theirs)
    assert worst <= TOL, f"{where}: {worst:.2e}"


def _broken(adapter, tmp_path, edit):
    """A copy of `adapter` with its tensors or config edited; returns its path."""
    import shutil
    from safetensors.numpy import load_file, save_file
    out = tmp_path / "broken"
    shutil.copytree(adapter, out)
    tensors = load_file(str(out / "adapter_model.safetensors"))
    cfg = json.loads((out / "adapter_config.json").read_text())
    edit(tensors, cfg)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


Q = "base_model.model.model.layers.0.self_attn.q_proj"
BAD = {  # edit of the plain adapter -> words the one line names
    "shape": (lambda t, c: t.update({f"{Q}.lora_B.weight": np.zeros((48, 4), np.float32)}), ("q_proj", "(48, 32)")),
    "rank": (lambda t, c: t.update({f"{Q}.lora_A.weight": np.zeros((3, 32), np.float32)}), ("q_proj", "lora_A")),
    "module": (lambda t, c: t.update({"base_model.model.model.layers.7.mlp.up_proj.lora_A.weight": np.zeros(
        (4, 32), np.float32), "base_model.model.model.layers.7.mlp.up_proj.lora_B.weight": np.zeros(
        (64, 4), np.float32)}), ("layers.7.mlp.up_proj",)),
    "dora": (lambda t, c: c.update(use_dora=True), ("use_dora",)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_adapters_that_do_not_fit_exit_2_and_write_nothing(lora, tmp_path, capsys, case):
    fam, adapters = lora
    edit, words = BAD[case]
    adapter = _broken(adapters["plain"], tmp_path, edit)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(json.dumps(dict(merge_method="passthrough", models=[dict(model=f"{fam['ft0']}+{adapter}")])))
    assert main(["merge", str(recipe), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()
