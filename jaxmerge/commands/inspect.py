"""`jaxmerge inspect MODEL`: what a checkpoint is, read without running it."""
from __future__ import annotations

HELP = "show family, layers, sizes, parameter count, dtype and shards of a model"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model directory or repo id in the local HF cache")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def summary(path: str) -> dict:
    """Spec facts plus counts from the tensors, read and checked one at a time (never the whole model in RAM)."""
    from jaxmerge.arch import ArchSpec
    from jaxmerge.errors import expect
    from jaxmerge.io import checked_tensors, resolve
    from jaxmerge.weights import weight_files
    model_dir = resolve(path)
    spec = ArchSpec.from_dir(model_dir)
    count, dtypes = 0, set()
    for _, array in checked_tensors(model_dir, spec):
        count += array.size
        dtypes.add(array.dtype.name)
    expect(len(dtypes) == 1, f"{model_dir}: expected one dtype for all tensors, found {sorted(dtypes)}")
    return {
        "path": str(model_dir), "family": spec.model_type, "layers": spec.num_layers,
        "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
        "heads": spec.num_heads, "kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size, "tied_embeddings": spec.tie_word_embeddings,
        "rope": f"{spec.rope_type} (theta={spec.rope_theta:g})", "attention": _attention(spec),
        **({"experts": f"{spec.num_experts} (top {spec.experts_per_token})"} if spec.num_experts else {}),
        "parameters": count,
        "dtype": dtypes.pop(), "shards": len(set(weight_files(model_dir).values())),
    }


def _attention(spec) -> str:
    """'full', or how many layers slide a window and how wide it is."""
    sliding = spec.attention_types.count("sliding_attention")
    return "full" if not sliding else f"{sliding}/{spec.num_layers} layers sliding (window {spec.sliding_window})"


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
