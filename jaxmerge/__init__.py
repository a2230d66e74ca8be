"""jaxmerge: evolutionary model merging in JAX (after Akiba et al., arXiv 2403.13187).

Public API: `load`, `save`, `logits`, `Model`, `ArchSpec`. Heavy modules (evolution, fitness) are imported where
they are used, and `load` / `save` / `Model` (numpy, ml_dtypes, safetensors) on first use, so that `import
jaxmerge` stays light and the CLI installs its signal handling within milliseconds of starting.
"""
from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError

LAZY = ("Model", "load", "save")


def __getattr__(name: str):
    if name in LAZY:
        from jaxmerge import io
        return getattr(io, name)
    raise AttributeError(f"module 'jaxmerge' has no attribute {name!r}")


__all__ = ["ArchSpec", "JaxmergeError", "Model", "load", "save", "logits"]
__version__ = "0.1.0"


def logits(model, tokens):
    """numpy float32 logits [batch, seq, vocab] of int tokens [batch, seq] (no padding).

    Token ids are checked here, on the host: inside jit an id outside the vocabulary gathers NaN, silently."""
    import numpy as np

    from jaxmerge.errors import expect
    from jaxmerge.model import forward_jit
    tokens = np.asarray(tokens)
    expect(tokens.ndim == 2 and np.issubdtype(tokens.dtype, np.integer),
           f"expected integer tokens [batch, seq], found {tokens.dtype} of shape {tokens.shape}")
    vocab = model.spec.vocab_size
    expect(tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < vocab),
           f"expected token ids in [0, {vocab}), found ids from {tokens.min()} to {tokens.max()}")
    return np.asarray(forward_jit(model.spec, model.params, tokens.astype(np.int32)))
