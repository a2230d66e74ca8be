"""The persistent compilation cache's settings: where it lives, and which programs it keeps."""
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


@pytest.mark.parametrize("bad", ["soon", "-1"])
def test_a_malformed_minimum_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("JAXMERGE_CACHE_MIN_SECONDS", bad)
    with pytest.raises(JaxmergeError, match=f"JAXMERGE_CACHE_MIN_SECONDS.*found '{bad}'"):
        min_compile_seconds()
