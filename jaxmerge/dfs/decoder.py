"""The DFS path as a fitness `Decoder`: greedy generation and teacher-forced scoring of layer paths.

Kept apart from path.py so the hot path does not import the fitness package. Use with
`spec = path_spec(A's spec, layout)` and `params = with_path(pool, layout.decode(genes))`; the plain model's
`init_cache` already allocates one KV entry per step from that spec.
"""
from jaxmerge import model
from jaxmerge.dfs import path
from jaxmerge.fitness.generate import Decoder

DFS_DECODER = Decoder(init_cache=model.init_cache, forward_cached=path.forward_cached, forward=path.forward)
