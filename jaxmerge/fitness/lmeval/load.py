"""An lm-eval task loaded offline, checked, with its requests built once on the host.

Which task: `lm_eval: NAME` (with `include_path: DIR`, else lm-eval's built-in tasks) or `lm_eval: FILE.yaml`
(its `task:` name, its folder searched). As `lm_eval.simple_evaluate` does it: `num_fewshot` overrides the
task's own unless that is 0, the few-shot sampler is seeded (1234, lm-eval's default), and the requests are built
for the documents of the task's evaluation split (its test split, else its validation split; `split:` names
another). A fixed subset (`subset: n`) is passed to lm-eval as `samples`, so lm-eval itself picks those documents.

Offline: datasets and the hub are put offline before lm-eval is imported; a task whose data are neither local
files nor in the local datasets cache is refused in one line naming the files to provide. Only what jaxmerge
scores exactly as lm-eval's `hf` backend does is accepted: loglikelihood / multiple_choice / generate_until
requests, greedy generation (do_sample false), one response per request, a metric aggregated by the mean.
"""
from __future__ import annotations

import contextlib
import glob
import io
import logging
from pathlib import Path
from typing import NamedTuple

from jaxmerge.errors import JaxmergeError, expect

FEWSHOT_SEED = 1234  # lm_eval.evaluator's default fewshot_random_seed
OUTPUT_TYPES = ("loglikelihood", "multiple_choice", "generate_until")


class LmEvalRef(NamedTuple):
    """An lm-eval task as a run config names it."""
    name: str                       # a task name, or a task YAML file
    include_path: Path | None = None
    metric: str | None = None       # None: the task's first metric
    filter: str | None = None       # None: the task's first filter ("none" when it has none)
    num_fewshot: int | None = None
    split: str | None = None        # None: the task's own evaluation split


def resolve(ref: LmEvalRef) -> tuple[str, Path | None]:
    """(task name, folder to search): a YAML file names its task in its `task:` key."""
    path = Path(ref.name)
    if path.suffix in (".yaml", ".yml"):
        from jaxmerge.yamlfile import read_yaml
        doc = read_yaml(path, "an lm-eval task YAML")
        expect(isinstance(doc, dict) and isinstance(doc.get("task"), str),
               f"{path}: expected an lm-eval task YAML with a 'task:' name, found none")
        return doc["task"], ref.include_path or path.parent
    return ref.name, ref.include_path


@contextlib.contextmanager
def quiet():
    """lm-eval logs every default it fills in (aggregation, higher_is_better) at WARNING, and datasets and lm-eval
    draw progress bars on stderr while loading and building: keep them out of a run's log (a refusal stays one
    line; errors still raise)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def load(ref: LmEvalRef):
    """The lm-eval Task object, loaded offline (no requests built yet)."""
    from jaxmerge.fitness.lmeval import offline, require
    require(f"lm_eval task {ref.name}")
    offline()
    name, include = resolve(ref)
    from lm_eval.tasks import TaskManager
    with quiet():
        manager = TaskManager(include_path=str(include) if include else None, include_defaults=include is None)
        entry = manager.task_index.get(name)
        expect(entry is not None, f"lm_eval task {name}: expected a task of that name"
                                  + (f" in {include}" if include else " among lm-eval's tasks") + ", found none")
        check_local_files(name, getattr(entry, "cfg", None) or {})
        try:
            loaded = manager.load([name])
        except Exception as e:  # datasets raises many types for data it cannot reach offline
            raise JaxmergeError(not_local(name, getattr(entry, 'cfg', None) or {}, e)) from None
    tasks = loaded["tasks"]
    expect(len(tasks) == 1, f"lm_eval task {name}: expected one task, found a group of {len(tasks)} "
                            f"({sorted(tasks)[:5]}): name its tasks one by one")
    return next(iter(tasks.values()))


LOCAL_BUILDERS = ("json", "csv", "parquet", "arrow", "text")
PROVIDE = ("provide the files: dataset_path: json (or csv / parquet / arrow) and dataset_kwargs: {data_files: "
           "{test: FILE}} in the task YAML")


def check_local_files(name: str, cfg: dict) -> None:
    """A local-file task's data_files must exist (named in the refusal); a hub dataset is tried from the cache."""
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if cfg.get("dataset_path") not in LOCAL_BUILDERS or files is None:
        return
    listed = [files] if isinstance(files, str) else [f for v in (files.values() if isinstance(files, dict) else
                                                               files) for f in ([v] if isinstance(v, str) else v)]
    missing = [f for f in listed if not glob.glob(f)]
    expect(not missing, f"lm_eval task {name}: expected its data files, found {missing} missing")


def not_local(name: str, cfg: dict, error: Exception) -> str:
    dataset = cfg.get("dataset_path", "?") + (f" ({cfg['dataset_name']})" if cfg.get("dataset_name") else "")
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return (f"lm_eval task {name}: expected its dataset {dataset} offline (local files or the local datasets "
            f"cache), found it unavailable ({type(error).__name__}: {first}); {PROVIDE}")


def configure(task, ref: LmEvalRef) -> None:
    """num_fewshot, the few-shot seed and the split, as `lm_eval.simple_evaluate` sets them."""
    if ref.num_fewshot is not None and task.get_config("num_fewshot") != 0:
        task.set_config(key="num_fewshot", value=ref.num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    if ref.split is not None:
        splits = sorted(task.dataset) if getattr(task, "dataset", None) is not None else []
        expect(ref.split in splits, f"lm_eval task {task.config.task}: expected a split in {splits}, found "
                                    f"{ref.split!r}")
        task.set_config(key="test_split", value=ref.split)


def eval_split(task) -> str:
    """The split lm-eval evaluates: the test split if there is one, else the validation split."""
    return task.config.test_split if task.has_test_docs() else task.config.validation_split


def build(task, samples: list[int] | None) -> list:
    """Every request of the evaluated documents (or of `samples`, doc indices), checked scorable."""
    with quiet():
        task.build_all_requests(samples=samples, rank=0, world_size=1, cache_requests=False)
    instances = list(task.instances)
    name = task.config.task
    expect(bool(instances), f"lm_eval task {name}: expected at least one document, found none")
    kinds = {i.request_type for i in instances}
    expect(kinds <= {"loglikelihood", "generate_until"}, f"lm_eval task {name}: expected loglikelihood, "
           f"multiple_choice or generate_until requests, found {sorted(kinds)} (use a jaxmerge task with "
           "metric: perplexity for loglikelihood_rolling)")
    expect(all(i.repeats == 1 for i in instances), f"lm_eval task {name}: expected one response per request "
                                                   "(repeats: 1; greedy decoding gives one), found more")
    return instances


def input_files(ref: LmEvalRef, limit: int = 1000) -> list[tuple[str, Path]]:
    """The task YAMLs searched (the named file, or every YAML under include_path) and the data files they name
    (`dataset_kwargs.data_files`): what `--resume` fingerprints. Built-in tasks read the datasets cache: not
    fingerprinted."""
    _, include = resolve(ref)
    if Path(ref.name).suffix in (".yaml", ".yml"):
        yamls = [Path(ref.name)]
    else:
        yamls = sorted([*Path(include).rglob("*.yaml"), *Path(include).rglob("*.yml")])[:limit] if include else []
    found = [("task", y) for y in yamls]
    for y in yamls:
        found += [("split", Path(f)) for f in data_files(y) if Path(f).is_file()]
    return found


def data_files(yaml_path: Path) -> list[str]:
    """The local data files one lm-eval task YAML names (lm-eval's own tags such as !function are skipped)."""
    from jaxmerge.yamlfile import parse_yaml
    try:
        doc = parse_yaml(yaml_path.read_text(), str(yaml_path), skip_tags=True)
    except (OSError, JaxmergeError, UnicodeDecodeError):
        return []
    files = ((doc or {}).get("dataset_kwargs") or {}).get("data_files") if isinstance(doc, dict) else None
    values = [files] if isinstance(files, str) else list(files.values()) if isinstance(files, dict) else files or []
    return [f for v in values for f in ([v] if isinstance(v, str) else v if isinstance(v, list) else [])
            if isinstance(f, str)]

