"""`jaxmerge eval MODEL TASK.yml`: score one model on one task split, as the fitness would, with per-item JSONL.

Everything that can be refused is refused before the weights are read: the task and its split, `--out` (an
existing file needs --overwrite), `--batch`, and max_new_tokens against the model's max_position_embeddings
(from config.json). The prepared arrays are then checked against the model (token ids, positions, memory) before
anything is compiled (jaxmerge.fitness.limits).
"""
from __future__ import annotations

HELP = "evaluate a model on a task (YAML + JSONL) and print its metric"


def add_arguments(parser) -> None:
    parser.add_argument("model", help="model directory (with its tokenizer) or repo id in the local HF cache")
    parser.add_argument("task", help="task YAML file")
    parser.add_argument("--split", help="split to evaluate (default: the first split in the YAML)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N items")
    parser.add_argument("--out", help="write per-item results to this JSONL file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--batch", type=int, default=16, help="items per compiled batch (default 16)")


def check_args(args, spec, task) -> None:
    """The cheap refusals: flags, the output file, the generation length against the model's positions."""
    from jaxmerge.atomic import check_file_target
    from jaxmerge.errors import expect
    expect(args.limit is None or args.limit >= 1, f"expected --limit >= 1, found {args.limit}")
    expect(args.batch >= 1, f"expected --batch >= 1, found {args.batch}")
    if args.out:
        check_file_target(args.out, args.overwrite)
    if task.generative:
        expect(task.max_new_tokens < spec.max_position_embeddings,
               f"task {task.name}: expected max_new_tokens below the model's max_position_embeddings "
               f"{spec.max_position_embeddings}, found {task.max_new_tokens}")


def run(args) -> int:
    import json

    from rich.console import Console
    from rich.progress import Progress

    from jaxmerge.arch import ArchSpec
    from jaxmerge.atomic import atomic_write_text
    from jaxmerge.fitness import load_items, load_task, load_tokenizer, make_fitness, prepare
    from jaxmerge.fitness.evaluate import evaluate
    from jaxmerge.io import load, resolve
    from jaxmerge.runtime import enable_compilation_cache

    task = load_task(args.task)
    model_dir = resolve(args.model)
    check_args(args, ArchSpec.from_dir(model_dir), task)
    split = args.split or task.splits[0][0]
    items = load_items(task, split, limit=args.limit)
    pool = load_items(task, task.fewshot_split) if task.fewshot else None
    enable_compilation_cache()
    model = load(model_dir)
    tokenizer = load_tokenizer(model.path)
    if task.images is not None:  # an image task: the model must be a VLM; its features are computed once here
        from jaxmerge.fitness.suite import image_task, task_fitness
        from jaxmerge.vlm.checkpoint import the_tower
        tower = the_tower({str(model_dir): model_dir})
        prepared = image_task(task, items, tower, min(args.batch, len(items)))
        fit = task_fitness(model.spec, prepared, tokenizer, image_token=tower.spec.image_token)
    else:
        prepared = prepare(task, items, tokenizer, fewshot_pool=pool, item_batch=min(args.batch, len(items)))
        fit = make_fitness(model.spec, prepared, tokenizer)
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"{task.name}/{split}", total=len(items))
        value, rows = evaluate(fit, model.params, tokenizer, lambda done: progress.update(bar, completed=done))
    if args.out:
        atomic_write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    Console().print(f"{task.name} [{split}, {len(items)} items] {task.metric}: {value:.6g}")
    return 0
