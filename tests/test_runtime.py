"""The persistent compilation cache's settings: where it lives, and which programs it keeps."""
import os
import subprocess
import sys

import jax
import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.runtime import enable_compilation_cache, min_compile_seconds


def test_programs_kept_follow_the_minimum_compile_time_setting(monkeypatch, tmp_path):
    before = jax.config.jax_persistent_cache_min_compile_time_secs, jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JAXMERGE_COMPILATION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JAXMERGE_CACHE_MIN_SECONDS", "2.5")
    try:
        assert enable_compilation_cache() == tmp_path / "cache" and (tmp_path / "cache").is_dir()
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[0])  # the session's cache again
        jax.config.update("jax_compilation_cache_dir", before[1])
    monkeypatch.delenv("JAXMERGE_CACHE_MIN_SECONDS")
    assert min_compile_seconds() == 1.0  # a user's default: only programs worth keeping
    assert min_compile_seconds(0) == 0  # `jaxmerge merge`'s: its small programs recur in every merge


def test_a_repeated_merge_loads_its_programs_instead_of_compiling_them(tmp_path):
    """`jaxmerge merge` stores even its sub-second programs (JAXMERGE_CACHE_MIN_SECONDS unset; a tiny model's
    all compile in well under a second): a first merge fills the cache, the same merge again adds nothing to it
    (every program loaded, none compiled: with a minimum of 0 each compile is stored)."""
    from tests.tiny import make_tiny_model
    base, model = make_tiny_model(tmp_path / "b", "llama", seed=3), make_tiny_model(tmp_path / "m", "llama", seed=4)
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"merge_method: dare_ties\nbase_model: {base}\nmodels:\n  - model: {model}\n"
                      "    parameters: {weight: 0.5, density: 0.5}\ndtype: float32\n")
    env = {k: v for k, v in os.environ.items() if k not in ("JAXMERGE_CACHE_MIN_SECONDS", "XLA_FLAGS")}
    env["JAXMERGE_COMPILATION_CACHE"] = str(tmp_path / "cache")
    stored = []
    for run in ("first", "again"):
        proc = subprocess.run([sys.executable, "-m", "jaxmerge.cli", "merge", str(recipe), str(tmp_path / run)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        stored.append(sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith("-atime")))
    assert stored[0] and stored[1] == stored[0], stored


@pytest.mark.parametrize("bad", ["soon", "-1"])
def test_a_malformed_minimum_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("JAXMERGE_CACHE_MIN_SECONDS", bad)
    with pytest.raises(JaxmergeError, match=f"JAXMERGE_CACHE_MIN_SECONDS.*found '{bad}'"):
        min_compile_seconds()
