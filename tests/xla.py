"""The suite's XLA flags: fake CPU devices, and programs compiled for a short compile rather than a fast run.

The suite is compile-bound: its models are tiny, and compiling their programs was ~80% of a test's time
(jax.monitoring's backend-compile, trace and lowering durations, over three of the heaviest modules). XLA's CPU
fusion emitters and LLVM's optimisation passes are most of a compile, so the suite turns both off (`pytest`
went from 597 s to 366 s on 2 idle cores, every test passing). Production runs keep XLA's defaults, and so do the
tests that check them: tools/gpu_check.py's dry run (both memory modes' evolve step) and the repeated-merge cache
test (tests/test_runtime.py) run their subprocesses without these flags.

A subprocess that needs another device count takes `suite_flags(devices=N)`, so that every process of a
comparison compiles the same way (a multi-process run against this process's reference, bit for bit).
`run_cli` is for the few tests whose time goes to running programs, not compiling them (the demos train and
search for many steps): a subprocess that keeps LLVM's optimisation (the text demo: 41 s in-process, 28 s so).
"""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

NO_FUSION_EMITTERS = ("--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1")
NO_LLVM_OPTIMIZATION = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")
# XLA aborts every process on a flag it does not know, and flags come and go between releases: the compile
# flags are given only to the jaxlib they were checked with; any other compiles with XLA's defaults (slower).
CHECKED_JAXLIB = ("0.10.",)


def suite_flags(devices: int, optimized: bool = False) -> str:
    """XLA_FLAGS for a test process: `devices` fake CPU devices; LLVM's optimisation only if `optimized`."""
    flags = (*NO_FUSION_EMITTERS, *(() if optimized else NO_LLVM_OPTIMIZATION))
    if not version("jaxlib").startswith(CHECKED_JAXLIB):
        flags = ()
    return " ".join((f"--xla_force_host_platform_device_count={devices}", *flags))


def run_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`jaxmerge ARGS` in a subprocess with LLVM's optimisation and one device, as a user runs it."""
    env = {**os.environ, "XLA_FLAGS": suite_flags(devices=1, optimized=True)}
    return subprocess.run([sys.executable, "-m", "jaxmerge.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
