"""Parameter-space (PS) merging: evolve a merge method's hyper-parameters (per model, layer group, parameter group).

genome.py  GeneSpec: raw genes <-> per-tensor hyper-parameters (pure, jittable).
fused.py   the fused memory mode: each layer merged inside the scanned forward.
space.py   build(cfg, mesh) -> the engine's SearchSpace (sources loaded sliced, merge state, fitness).
export.py  the winner: model/, recipe.yml (recipe.py: exact mergekit recipe), plots/genes_*.png (plots.py).
"""
