"""Arrays that are made when they are read: a source tensor left in its file, a merged tensor not yet merged.

A one-shot merge never holds a whole model: `jaxmerge.io.load(..., lazy=True)` gives a Model whose leaves are
`Deferred` (one tensor, read from its file on demand) and `DeferredStack` (a layer leaf: one Deferred per
layer), and the merge (jaxmerge.merge.stream) gives a Model of the same kind whose tensors are merged when the
writer asks for them. Both behave as the numpy arrays they stand for where the code around them only looks
(`shape`, `dtype`, `np.asarray`, a layer `[i]` or a layer range `[a:b]`), so loading, vocabulary alignment and
writing need one code path whether the arrays exist yet or not. Nothing is cached: each read makes the array
again, and a caller that reads one twice should keep it (`materialise`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class _Shaped:
    """What numpy callers read without making the array: ndim and nbytes from `shape` and `dtype`."""
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Deferred(_Shaped):
    """One tensor of `shape` and `dtype`, made by `make()` (a numpy array of exactly that shape and dtype), or
    by `fill(out)` straight into an array the caller holds (`make_into`: a source tensor read from its file
    into its slot of the models' stack, not read and then copied)."""

    def __init__(self, shape: tuple[int, ...], dtype, make: Callable[[], np.ndarray],
                 fill: Callable[[np.ndarray], None] | None = None):
        self.shape, self.dtype, self._make, self._fill = tuple(shape), np.dtype(dtype), make, fill

    def make_into(self, out: np.ndarray) -> None:
        """The tensor's values in `out` (C-contiguous, of this shape and dtype)."""
        assert out.shape == self.shape and out.dtype == self.dtype and out.flags.c_contiguous, (out.shape, self.shape)
        if self._fill is None:
            out[...] = self.get()
        else:
            self._fill(out)

    def get(self) -> np.ndarray:
        array = self._make()
        assert array.shape == self.shape and array.dtype == self.dtype, (array.shape, array.dtype, self.shape,
                                                                         self.dtype)
        return array

    def __array__(self, dtype=None, copy=None):
        array = self.get()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, index):
        return self.get()[index]

    def astype(self, dtype, copy: bool = True) -> Deferred:
        """The same tensor converted when it is made (numpy's rounding)."""
        if np.dtype(dtype) == self.dtype:
            return self
        return Deferred(self.shape, dtype, lambda: self.get().astype(dtype))


class DeferredStack(_Shaped):
    """A layer leaf [L, ...]: `items[i]` is layer i (a Deferred or an array). `[i]` gives that layer, `[a:b]` a
    DeferredStack of the range; anything else (and `np.asarray`) makes and stacks every layer."""

    def __init__(self, items: list):
        self.items = list(items)
        first = self.items[0]
        self.shape, self.dtype = (len(self.items), *first.shape), np.dtype(first.dtype)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.items[index]
        if isinstance(index, slice) and index.step in (None, 1):
            return DeferredStack(self.items[index])
        return np.asarray(self)[index]

    def __array__(self, dtype=None, copy=None):
        array = np.stack([np.asarray(x) for x in self.items])
        return array if dtype is None else array.astype(dtype)

    def astype(self, dtype, copy: bool = True) -> DeferredStack:
        return DeferredStack([x.astype(dtype) for x in self.items])


def concatenate(stacks: list) -> DeferredStack:
    """Layer leaves joined on the layer axis without making them (a recipe's slices, one after the other)."""
    return DeferredStack([layer for s in stacks for layer in (s.items if isinstance(s, DeferredStack) else s)])


def is_deferred(x) -> bool:
    return isinstance(x, (Deferred, DeferredStack))


def materialise(tree):
    """`tree` (nested dicts) with every deferred leaf made: for a result that is read more than once."""
    if isinstance(tree, dict):
        return {k: materialise(v) for k, v in tree.items()}
    return np.asarray(tree) if is_deferred(tree) else tree
