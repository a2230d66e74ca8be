"""The model card every output carries: Hub front matter, the merge, the recipe, how to rebuild; written inside
`save`'s atomic directory (all or nothing)."""
from __future__ import annotations

import pytest
import yaml

import jaxmerge
from jaxmerge.errors import EnvironmentFault
from jaxmerge.card import hub_id, title, write_card
from tests.tiny import make_tiny_model

RECIPE = {"merge_method": "ties", "base_model": "org/base", "models": [{"model": "org/a"}, {"model": "/x/b"}]}


def _front(text: str) -> dict:
    head, sep, _ = text.partition("\n---\n")
    assert text.startswith("---\n") and sep, text[:200]
    return yaml.safe_load(head[4:])


def test_card_has_front_matter_method_sources_recipe_sections_and_rebuild(tmp_path):
    snapshot = tmp_path / "hub" / "models--acme--tuned" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    out = tmp_path / "merged"
    out.mkdir()
    write_card(out, sources=["org/a", "/x/b", str(snapshot)], base="org/base", method="ties", recipe=RECIPE,
               sections={"Fitness": "0.75 on arith (dev)"}, rebuild="`jaxmerge merge mergekit_config.yml OUT`",
               tags=("evolved",))
    text = (out / "README.md").read_text()
    meta = _front(text)
    assert meta["base_model"] == ["org/a", "acme/tuned", "org/base"]  # local paths are not Hub ids
    assert meta["tags"] == ["merge", "jaxmerge", "mergekit", "evolved"] and meta["library_name"] == "transformers"
    assert "# merged\n" in text and "`ties`" in text and "arxiv.org/abs/2306.01708" in text
    for ref in ("org/a", "/x/b", str(snapshot), "org/base"):
        assert f"- `{ref}`" in text
    assert "## Fitness\n\n0.75 on arith (dev)" in text and "jaxmerge merge mergekit_config.yml OUT" in text
    assert yaml.safe_load((out / "mergekit_config.yml").read_text()) == RECIPE
    assert yaml.safe_dump(RECIPE, sort_keys=False) in text


def test_recipe_text_is_written_verbatim_and_no_recipe_means_no_config(tmp_path):
    text = "# jaxmerge: {\"merge_key\": [1, 2]}\nmerge_method: linear\nmodels: [{model: a}]\n"
    write_card(tmp_path, sources=["a"], base=None, method="linear", recipe={"x": 1}, recipe_text=text,
               rebuild="r")
    assert (tmp_path / "mergekit_config.yml").read_text() == text
    other = tmp_path / "dfs"
    other.mkdir()
    write_card(other, sources=["a"], base=None, method="passthrough", recipe=None, rebuild="r")
    assert (other / "README.md").is_file() and not (other / "mergekit_config.yml").exists()
    assert _front((other / "README.md").read_text())["base_model"] == []


def test_hub_ids_and_titles(tmp_path):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "local").mkdir()
    assert hub_id("meta-llama/Llama-3-8B") == "meta-llama/Llama-3-8B"
    assert hub_id(str(tmp_path / "org" / "local")) is None and hub_id("./ft0") is None
    assert title(tmp_path / ".model.tmp-x1y2") == "model" and title(tmp_path / "model") == "model"


def test_save_writes_the_card_inside_its_atomic_directory(tmp_path):
    model = jaxmerge.load(make_tiny_model(tmp_path / "src", "llama", seed=1))

    def card(tmp):
        write_card(tmp, sources=["org/a"], base=None, method="linear", recipe=RECIPE, rebuild="r")
    out = jaxmerge.save(model, tmp_path / "out", extra=card)
    assert _front((out / "README.md").read_text())["base_model"] == ["org/a"]
    assert "\n# out\n" in (out / "README.md").read_text()  # the final name, not the temporary one

    def broken(tmp):
        card(tmp)
        raise OSError(28, "No space left on device")
    with pytest.raises(EnvironmentFault, match="disk full"):  # a full disk is the machine's fault: exit 1
        jaxmerge.save(model, tmp_path / "failed", extra=broken)
    assert not (tmp_path / "failed").exists() and not list(tmp_path.glob(".failed.tmp-*"))
