"""`jaxmerge inspect MODEL`: what a checkpoint is, read without running it."""
from __future__ import annotations

HELP = "show family, layers, sizes, parameter count, dtype and shards of a model"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model directory or repo id in the local HF cache")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def summary(path: str) -> dict:
    from jaxmerge.io import load, resolve, weight_files
    model = load(path)
    spec = model.spec
    return {
        "path": str(model.path), "family": spec.model_type, "layers": spec.num_layers,
        "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "heads": spec.num_heads, "kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size, "tied_embeddings": spec.tie_word_embeddings,
        "rope": f"{spec.rope_type} (theta={spec.rope_theta:g})", "parameters": model.num_parameters,
        "dtype": model.dtype, "shards": len(set(weight_files(resolve(path)).values())),
    }


def run(args) -> int:
    import json
    info = summary(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title=f"jaxmerge inspect {args.model}", show_header=False)
    for key, value in info.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    Console().print(table)
    return 0
