"""Transparent huge pages for XLA's host buffers: the program runs itself again, once, with glibc's malloc told
to ask for them (GLIBC_TUNABLES glibc.malloc.hugetlb=1, glibc >= 2.35).

Why: on CPU every compiled call writes its outputs into freshly allocated buffers, and where the kernel hands
out huge pages only on request (transparent_hugepage "madvise", a common default) each 4 KiB page of a new
buffer is a fault that the kernel zeroes, and those faults were most of a merge kernel's time: over three
102M-parameter float32 models, merge_params took 0.075-0.091 s with the tunable against 0.20-0.45 s without
(linear; medians of three runs with, four without) and 0.20-0.27 s against 0.46-0.55 s (dare_ties), with the
same bits (benchmarks/RESULTS.md, merge speed). glibc reads its tunables when a process starts, so setting the
variable later does nothing: hence the re-execution, before anything is imported or started. Nothing happens
where it cannot help (not Linux with glibc >= 2.35, huge pages "always" or "never"), where the tunable is
already set, or with JAXMERGE_HUGE_PAGES=off. A process that touches each buffer once gains nothing: a one-shot
`jaxmerge merge` of the same models took 3.34-3.93 s with the tunable against 2.94-3.45 s without (more time
zeroing whole huge pages), so only the commands that run programs again and again ask for it
(jaxmerge.cli.REPEATING), and the benchmarks.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_env(environ: dict[str, str], thp_mode: str, libc: tuple[str, str]) -> dict[str, str] | None:
    """The environment to run again with, or None when running again would change nothing. `thp_mode`: the
    kernel's transparent_hugepage/enabled line ("always [madvise] never"); `libc`: platform.libc_ver()."""
    if environ.get("JAXMERGE_HUGE_PAGES", "").lower() == "off" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return None
    name, version = libc
    if name != "glibc" or tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (2, 35):
        return None
    if "[madvise]" not in thp_mode:
        return None
    tunables = environ.get("GLIBC_TUNABLES")
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{SETTING}" if tunables else SETTING}


def with_huge_pages() -> None:
    """Run this program again with the tunable set (module doc), or return at once where that changes nothing.
    Call it first thing in a program's entry point, never inside a process that is not the program."""
    if sys.platform != "linux":
        return
    try:
        mode = THP_MODE.read_text()
    except OSError:
        return
    env = huge_pages_env(dict(os.environ), mode, platform.libc_ver())
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def without_huge_pages(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without the tunable this module adds: what a benchmark hands the programs it times (jaxmerge
    merge, mergekit-yaml), so that each runs as it would from the user's shell."""
    rest = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t and t != SETTING]
    env = {k: v for k, v in environ.items() if k != "GLIBC_TUNABLES"}
    return {**env, "GLIBC_TUNABLES": ":".join(rest)} if rest else env
