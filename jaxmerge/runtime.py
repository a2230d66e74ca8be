"""Process-wide JAX settings the commands share: the persistent compilation cache; the memory left to use.

A search compiles one large step (merge + forward + decode for a whole population); caching the compiled
program on disk makes the second run of the same config (a resume, the demo run again, a test) start at once.
Set JAXMERGE_COMPILATION_CACHE to a directory to move it, or to "off" to disable it. Programs that compile in
under JAXMERGE_CACHE_MIN_SECONDS are not stored: a user's cache keeps the programs worth keeping. The default
is 1.0 s, except for `jaxmerge merge` (0): its small per-shape programs compile in under a second each but
recur in every merge of an architecture and method, and together they were a third of a 3 x 102M DARE-TIES
merge's thread time (benchmarks/RESULTS.md). The test suite sets 0, because its many small programs recur
across tests and processes.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "jaxmerge" / "xla"


def enable_compilation_cache(default_min_seconds: float = 1.0) -> Path | None:
    """Turn the persistent cache on (module doc); `default_min_seconds` unless JAXMERGE_CACHE_MIN_SECONDS says."""
    setting = os.environ.get("JAXMERGE_COMPILATION_CACHE", str(DEFAULT_DIR))
    if setting.lower() in ("off", "0", "none", ""):
        return None
    import jax
    path = Path(setting).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache must never stop a run
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds(default_min_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def min_compile_seconds(default: float = 1.0) -> float:
    from jaxmerge.errors import expect
    setting = os.environ.get("JAXMERGE_CACHE_MIN_SECONDS", str(default))
    try:
        seconds = float(setting)
    except ValueError:
        seconds = -1.0
    expect(seconds >= 0, f"expected JAXMERGE_CACHE_MIN_SECONDS to be a number of seconds >= 0, found {setting!r}")
    return seconds


def available_bytes() -> int:
    """Memory a computation may still take: the default device's free memory where JAX reports it (GPU/TPU),
    else the host's MemAvailable (CPU; /proc/meminfo), else a generous 64 GiB (no way to tell)."""
    import jax
    stats = jax.local_devices()[0].memory_stats()  # another process's devices report nothing
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 64 * 2**30
