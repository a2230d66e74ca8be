"""jaxmerge: evolutionary model merging in JAX (after Akiba et al., arXiv 2403.13187).

Public API: `load`, `save`, `logits`, `Model`, `ArchSpec`. Heavy modules (evolution, fitness) are imported where
they are used so that `import jaxmerge` stays light.
"""
from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.io import Model, load, save

__all__ = ["ArchSpec", "JaxmergeError", "Model", "load", "save", "logits"]
__version__ = "0.1.0"


def logits(model: Model, tokens) -> "numpy.ndarray":  # noqa: F821
    """float32 logits [batch, seq, vocab] of int tokens [batch, seq] (no padding)."""
    import numpy as np

    from jaxmerge.model import forward_jit
    return np.asarray(forward_jit(model.spec, model.params, np.asarray(tokens, np.int32)))
