"""An image's features as the language model reads them: one vision-tower pass (LLaVA-1.5), or LLaVA-Next's
any-resolution tiles packed with spatial unpadding and an image-newline column (transformers'
pack_image_features, ported to numpy).

This runs on the host once per image: the features do not depend on the genome. The tile grid is chosen by
transformers' own select_best_resolution (the function its processor uses), so the grid, the unpadding and the
token count agree with what the processor expanded the prompt to.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.vlm.vision import image_features_jit


def grid_shape(spec, image_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of tiles for an image of (height, width)."""
    from transformers.image_processing_utils import select_best_resolution
    height, width = select_best_resolution(tuple(int(x) for x in image_size), [list(g) for g in spec.grid])
    tile = spec.vision.image_size
    return height // tile, width // tile


def unpad(x: np.ndarray, original: tuple[int, int]) -> np.ndarray:
    """x [D, H, W] without the rows / columns the processor's letterboxing padded (transformers' rule)."""
    oh, ow = (int(v) for v in original)
    h, w = x.shape[1:]
    if ow / oh > w / h:
        pad = (h - int(round(oh * (w / ow), 7))) // 2
        return x[:, pad:h - pad, :]
    pad = (w - int(round(ow * (h / oh), 7))) // 2
    return x[:, :, pad:w - pad]


def pack(spec, tiles: np.ndarray, image_size: tuple[int, int], newline: np.ndarray) -> np.ndarray:
    """tiles [P, n, D] (the base image first) -> [N, D]: base features, then the tile grid unpadded, a newline
    feature after every row."""
    if tiles.shape[0] == 1:
        return np.concatenate([tiles[0], newline[None].astype(tiles.dtype)])
    side = spec.vision.image_size // spec.vision.patch_size
    rows, cols = grid_shape(spec, image_size)
    d = tiles.shape[-1]
    grid = tiles[1:].reshape(rows, cols, side, side, d).transpose(4, 0, 2, 1, 3).reshape(d, rows * side, cols * side)
    grid = unpad(grid, image_size)
    column = np.broadcast_to(newline.astype(tiles.dtype)[:, None, None], (d, grid.shape[1], 1))
    grid = np.concatenate([grid, column], axis=-1).reshape(d, -1).T
    return np.concatenate([tiles[0], grid])


def image_tokens(tower, pixels: np.ndarray, image_size=None) -> np.ndarray:
    """[N, D] features of one image: pixels [C, H, W] (LLaVA-1.5) or its tiles [P, C, H, W] with the original
    (height, width) (LLaVA-Next; the processor's padding tiles beyond the image's own are dropped)."""
    spec = tower.spec
    dtype = tower.vision["embeddings.patch_embedding.weight"].dtype
    if not spec.tiled:
        return np.asarray(image_features_jit(spec, tower.vision, tower.projector, jnp.asarray(pixels[None], dtype)))[0]
    rows, cols = grid_shape(spec, image_size)
    expect(pixels.shape[0] >= rows * cols + 1, f"expected {rows * cols + 1} tiles for an image of {tuple(image_size)}"
                                               f", found {pixels.shape[0]}")
    tiles = image_features_jit(spec, tower.vision, tower.projector, jnp.asarray(pixels[:rows * cols + 1], dtype))
    return pack(spec, np.asarray(tiles), image_size, np.asarray(tower.top["image_newline"]))
