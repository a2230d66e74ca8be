"""Data-flow-space (DFS) merging: evolve the path a token takes through the layers of several models.

layout.py  DFSLayout: the static layout (T = M*r slots + A's last layer as a fixed tail), gene template,
           initial genes (= model A), decode -> DecodedPath.
sources.py host-side: check the models share A's architecture; stack all their layers into one pool.
path.py    pure, jittable path forward / KV-cached forward over the T + 1 steps (vmappable over genes).
fold.py    fold a decoded path into a plain decoder stack (scales into the residual writers and norm gains).
export.py  write the winner as a standard HF model + path.json + plots/path.png.

Heavy or host-only modules (export, plotting) are not imported here, so the hot path stays light.
"""
from jaxmerge.dfs.path import forward, forward_cached, path_spec, pool_types, with_path
from jaxmerge.dfs.layout import DecodedPath, DFSLayout

__all__ = ["DFSLayout", "DecodedPath", "forward", "forward_cached", "path_spec", "pool_types", "with_path"]
