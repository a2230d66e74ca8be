"""Hugging Face data as task splits: parquet / CSV / JSON / arrow files, a save_to_disk folder and a dataset folder
through `datasets`, with a column mapping; pandas (the files' writer) is the oracle of what each row holds."""
import json

import pandas as pd
import pytest

from jaxmerge.cli import main
from jaxmerge.errors import JaxmergeError
from jaxmerge.fitness.tasks import load_items, load_task

pytest.importorskip("datasets")

ROWS = pd.DataFrame({"question": [f"{a}+{a}=" for a in range(6)], "answer_number": [2 * a for a in range(6)],
                     "options": [[str(2 * a), str(2 * a + 1)] for a in range(6)], "note": ["x"] * 6})


def write(tmp_path, split: str, columns: str = "{prompt: question, answer: answer_number}", metric="exact_match"):
    path = tmp_path / "task.yml"
    path.write_text(f"name: t\nsplits: {{dev: {split}}}\ntemplate: '{{prompt}}'\nmetric: {metric}\n"
                    f"columns: {columns}\n")
    return load_task(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import datasets
    root = tmp_path_factory.mktemp("hfdata")
    ROWS.to_parquet(root / "dev.parquet")
    ROWS.drop(columns="options").to_csv(root / "dev.csv", index=False)
    ROWS.to_json(root / "dev.json", orient="records", lines=True)
    saved = datasets.Dataset.from_pandas(ROWS)
    saved.save_to_disk(str(root / "saved"))
    arrow = next((root / "saved").glob("*.arrow"))
    (root / "folder").mkdir()
    ROWS.to_parquet(root / "folder" / "train.parquet")
    return {"parquet": "dev.parquet", "csv": "dev.csv", "json": "dev.json", "saved": "saved/",
            "arrow": str(arrow.relative_to(root)), "root": root}


@pytest.mark.parametrize("kind", ["parquet", "csv", "json", "saved", "arrow"])
def test_split_files_read_as_their_writer_wrote_them(files, kind):
    items = load_items(write(files["root"], files[kind]), "dev")
    assert [i.prompt for i in items] == list(ROWS["question"])
    assert [i.answer for i in items] == [str(v) for v in ROWS["answer_number"]]
    assert items[2].row["note"] == "x" and items[2].row["question"] == "2+2="  # the whole row is kept


def test_choices_from_a_list_column(files):
    task = write(files["root"], files["parquet"], "{prompt: question, answer: answer_number, choices: options}",
                 metric="choice")
    items = load_items(task, "dev")
    assert [i.choices for i in items] == [tuple(c) for c in ROWS["options"]]


def test_a_dataset_folder_through_the_cache_reader(files):
    task = write(files["root"], f"{{dataset: {files['root'] / 'folder'}, split: train}}")
    assert [i.prompt for i in load_items(task, "dev")] == list(ROWS["question"])


def test_jsonl_splits_take_the_column_mapping_too(tmp_path):
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"q": f"{a}?", "a": a}) + "\n" for a in range(3)))
    items = load_items(write(tmp_path, "dev.jsonl", "{prompt: q, answer: a}"), "dev")
    assert [(i.prompt, i.answer) for i in items] == [("0?", "0"), ("1?", "1"), ("2?", "2")]


@pytest.mark.parametrize("case,split,columns,expected", [
    ("missing column", "dev.parquet", "{prompt: question, answer: answer}", "'answer'"),
    ("no prompt column", "dev.parquet", "{answer: answer_number}", "'prompt'"),
    ("not in the cache", "{dataset: no-such-org/no-such-dataset, split: train}", "{}", "local datasets cache"),
    ("unknown field", "dev.parquet", "{prompt: question, label: x}", "unknown key"),
    ("corrupt file", "bad.parquet", "{}", "readable dataset split"),
])
def test_bad_data_is_one_line(files, case, split, columns, expected):
    (files["root"] / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(JaxmergeError) as e:
        load_items(write(files["root"], split, columns), "dev")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_eval_cli_scores_a_parquet_task(files, tiny_model, tmp_path):
    """`jaxmerge eval` on a parquet split scores every row the writer wrote, with its prompt and answer."""
    from tests.fitness_tiny import add_char_tokenizer
    model = add_char_tokenizer(tiny_model("llama", seed=1))
    write(files["root"], files["parquet"])
    out = tmp_path / "items.jsonl"
    assert main(["eval", str(model), str(files["root"] / "task.yml"), "--split", "dev", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt"], r["answer"]) for r in rows] == [(q, str(a)) for q, a in zip(ROWS["question"],
                                                                                       ROWS["answer_number"])]
