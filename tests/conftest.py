"""Test setup: 8 fake CPU devices and the suite's compiler settings (set before jax is imported anywhere), and
tiny HF model fixtures."""
import os

from tests.xla import suite_flags

os.environ.setdefault("XLA_FLAGS", suite_flags(devices=8))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.tiny import make_tiny_model  # noqa: E402

# One torch thread per test process: the suite runs two xdist workers on two cores, and torch's default (a thread
# per core in each worker) oversubscribes them; mergekit's oracle merges were measured 10x slower that way.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache for the whole session, shared by both xdist workers and every subprocess
    (through the environment), and empty at the start: hermetic (never the user's ~/.cache), and a program the
    session compiled once (the tiny worlds are identical bits everywhere) is loaded, not compiled, after that.
    Every program is kept, however fast it compiled: the suite's programs are small, and the same ones recur in
    many tests and in every CLI subprocess."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    os.environ["JAXMERGE_COMPILATION_CACHE"] = str(shared)
    os.environ.setdefault("JAXMERGE_CACHE_MIN_SECONDS", "0")  # the tiny programs recur: cache them all
    from jaxmerge.runtime import enable_compilation_cache
    enable_compilation_cache()
    yield shared


@pytest.fixture
def tiny_model(tmp_path):
    """Factory: tiny_model(family="llama", seed=0, **config_overrides) -> path of a saved random HF model."""
    counter = iter(range(10**6))

    def make(family="llama", seed=0, name=None, **overrides):
        path = tmp_path / (name or f"{family}-{seed}-{next(counter)}")
        return make_tiny_model(path, family, seed=seed, **overrides)

    return make
