"""What a run says about itself, written in one place: history.jsonl, best.json, and the baseline lines.

Both files are rewritten atomically after every generation (a killed run shows its best so far, with
"status": "running"), and once more when the winner is exported ("finished"). history.jsonl holds the
baselines as generation 0, then one row per generation; best.json the best candidate so far with its genes and merge key, the fitness of the starting
point and of every source on the same fitness data ("baselines"), and whether the search beat its start.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from jaxmerge.atomic import atomic_write_text


def history_row(state, stats, seconds: float, population: int) -> dict:
    return {"generation": int(state.generation), "best": float(stats.best), "mean": float(stats.mean),
            "std": float(stats.std), "best_so_far": float(state.best_fitness), "nonfinite": int(stats.nonfinite),
            "evals_per_s": population / max(seconds, 1e-9), "seconds": seconds}


def best_record(space, state, baselines: dict, status: str) -> dict:
    """best.json: the best candidate so far (genes in real units, unit-cube raw genes, its merge key)."""
    fitness, start = float(state.best_fitness), baselines.get("start")
    beat = start is None or fitness > start
    return {"status": status, "space": space.name, "fitness": fitness, "generation": int(state.best_generation),
            "improved_on_start": bool(beat), "genes": space.describe(state.best_raw),
            "raw": np.asarray(state.best_raw).tolist(), "merge_key": np.asarray(state.best_key).tolist(),
            "evaluations": int(state.evaluations), "nonfinite": int(state.nonfinite), "baselines": baselines,
            **space.facts}


def write(out: Path, history: list[dict], best: dict) -> None:
    """Rewrite history.jsonl and best.json (each atomically). history.jsonl's first line is generation 0: the
    baselines (the starting point and every source, scored before generation 1), then one row per generation."""
    rows = [{"generation": 0, "baselines": best["baselines"]}, *history]
    atomic_write_text(out / "history.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    atomic_write_text(out / "best.json", json.dumps(best, indent=2))


def read_history(out: Path) -> list[dict]:
    """The generation rows of DIR/history.jsonl (without its baselines line)."""
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [row for row in rows if "baselines" not in row]


def read_best(out: Path) -> dict:
    return json.loads((out / "best.json").read_text())


def finished(out: Path, generations: int) -> bool:
    """Whether DIR holds a finished run of `generations` generations (its winner already exported)."""
    try:
        best = read_best(out)
    except (OSError, ValueError):
        return False
    history = read_history(out) if (out / "history.jsonl").is_file() else []
    return best.get("status") == "finished" and len(history) == generations


def say(line: str) -> None:
    """One line of the run's log on stderr (stdout carries only the final JSON summary)."""
    print(line, file=sys.stderr, flush=True)


def baseline_lines(baselines: dict) -> list[str]:
    """The baselines as the run prints them before generation 1."""
    lines = [f"baseline start point: fitness {baselines['start']:.6g}"]
    lines += [f"baseline source {name}: fitness {value:.6g}" for name, value in baselines["sources"].items()]
    return lines


def ending_line(best: dict) -> str:
    if best["improved_on_start"]:
        return f"best: fitness {best['fitness']:.6g} (generation {best['generation']}), " \
               f"start point {best['baselines']['start']:.6g}"
    return f"no candidate beat the start point (fitness {best['baselines']['start']:.6g}): returning the start point"


def card_sections(record: dict) -> dict[str, str]:
    """The model card's account of a search: what it scored on, the winner against its baselines, the genes."""
    tasks = "".join(f"- `{t['task']}` ({t['file']}), split `{t['split']}`, {t['items']} items, metric "
                    f"`{t['metric']}`, weight {t['weight']:g}\n" for t in record.get("tasks", []))
    rows = [("this model (the winner)", record["fitness"]), ("the starting point", record["baselines"]["start"])]
    rows += [(f"`{name}` alone", value) for name, value in record["baselines"]["sources"].items()]
    table = "| model | fitness |\n|---|---|\n" + "".join(
        f"| {name} | {'n/a' if value is None else f'{value:.6g}'} |\n" for name, value in rows)
    verdict = ("The search beat its starting point." if record["improved_on_start"] else
               "No candidate beat the starting point: this model is the starting point.")
    if "front_member" in record:  # a trade-off of the front, not the weighted-fitness winner
        verdict = "A front member is chosen for its objectives, not for this weighted fitness."
    genes = json.dumps(record.get("genes", {}))
    return {**objectives_section(record),
            "Evolution": f"Found by jaxmerge's {record['space'].upper()} search (generation {record['generation']}, "
                         f"{record['evaluations']} candidates scored). Fitness (higher is better) on:\n\n{tasks}\n"
                         f"{table}\n{verdict}\n",
            "Evolved genes": f"In real units, as in best.json:\n\n```json\n{genes}\n```\n"}


def objectives_section(record: dict) -> dict[str, str]:
    """A front member's card (`jaxmerge export DIR --member N`): which member, and its objectives."""
    if "front_member" not in record:
        return {}
    rows = "".join(f"| {name} | {value:.6g} |\n" for name, value in record["front_member"]["objectives"].items())
    return {"Front member": f"This model is {record['status']} of a several-objective (NSGA-II) search: one "
                            "trade-off among the front in front.json. Its objectives (higher is better; a "
                            f"`length:` objective is minus the mean answer length in tokens):\n\n"
                            f"| objective | value |\n|---|---|\n{rows}"}
