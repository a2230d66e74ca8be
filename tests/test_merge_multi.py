"""Multi-document recipes (mergekit-multi's) against mergekit 0.1.5's own multimerge (in-process): a chain of
three documents whose later ones name earlier results, merged in memory and through --intermediate-dir (with
--lazy reading what exists); chains that name an undefined or later document, or themselves, are refused with
one line, exit 2, nothing written."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from jaxmerge.cli import main
from tests.merge_oracle import make_family, read_tensors, worst_relative

TOL = 1e-5


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("chain"), n=3)


def chain(p) -> list[dict]:
    return [
        dict(name="soup", merge_method="ties", base_model=p["base"], dtype="float32", parameters=dict(density=0.6),
             models=[dict(model=p["ft0"], parameters=dict(weight=0.7)), dict(model=p["ft1"], parameters=dict(weight=0.5))]),
        dict(name="sphere", merge_method="slerp", base_model=p["base"], dtype="float32", parameters=dict(t=[0.2, 0.8]),
             models=[dict(model=p["base"]), dict(model="soup")]),
        dict(merge_method="task_arithmetic", base_model="soup", dtype="float32",
             models=[dict(model="sphere", parameters=dict(weight=0.6)), dict(model=p["ft2"], parameters=dict(weight=0.3))]),
    ]


def write(path, docs) -> str:
    path.write_text("\n---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    return str(path)


def mergekit_multi(recipe: str, out, intermediate) -> dict:
    """mergekit 0.1.5's mergekit-multi, in-process: its own load_config, make_tasks and executor."""
    import torch
    from mergekit.graph import Executor
    from mergekit.options import MergeOptions
    from mergekit.scripts.multimerge import load_config, make_tasks
    torch.set_num_threads(1)
    options = MergeOptions(allow_crimes=True, quiet=True, write_model_card=False, copy_tokenizer=False)
    configs, deps = load_config(open(recipe).read(), str(intermediate))
    Executor(make_tasks(configs, deps, options, str(intermediate), str(out), True), math_device="cpu",
             storage_device="cpu").execute()
    return read_tensors(out)


@pytest.mark.slow
def test_chain_in_memory_and_through_an_intermediate_dir(fam, tmp_path, capsys):
    recipe = write(tmp_path / "chain.yml", chain(fam))
    theirs = mergekit_multi(recipe, tmp_path / "mergekit", tmp_path / "mk-intermediate")
    assert main(["merge", recipe, str(tmp_path / "memory")]) == 0
    worst, where = worst_relative(read_tensors(tmp_path / "memory"), theirs)
    assert worst <= TOL, f"{where}: {worst:.2e}"
    assert "name: sphere" in (tmp_path / "memory" / "mergekit_config.yml").read_text()  # the whole chain
    inter = tmp_path / "intermediate"
    assert main(["merge", recipe, str(tmp_path / "disk"), "--intermediate-dir", str(inter)]) == 0
    assert sorted(p.name for p in inter.iterdir()) == ["soup", "sphere"]
    for name in ("soup", "sphere"):
        worst, where = worst_relative(read_tensors(inter / name), read_tensors(tmp_path / "mk-intermediate" / name))
        assert worst <= TOL, f"{name} {where}: {worst:.2e}"
    disk = read_tensors(tmp_path / "disk")
    assert all(np.array_equal(disk[k], v) for k, v in read_tensors(tmp_path / "memory").items())
    # --lazy (the default) reads what exists: a changed `sphere` changes the output; --no-lazy merges it again
    changed = dict(chain(fam)[1], parameters=dict(t=0.5))
    write(tmp_path / "other.yml", [dict(chain(fam)[0]), changed, chain(fam)[2]])
    main(["merge", str(tmp_path / "other.yml"), str(tmp_path / "lazy"), "--intermediate-dir", str(inter)])
    lazy = read_tensors(tmp_path / "lazy")
    assert all(np.array_equal(lazy[k], v) for k, v in disk.items())
    main(["merge", str(tmp_path / "other.yml"), str(tmp_path / "eager"), "--intermediate-dir", str(inter),
          "--no-lazy"])
    assert not all(np.array_equal(read_tensors(tmp_path / "eager")[k], v) for k, v in disk.items())


BAD = {  # how the chain is broken -> words of the one line
    "undefined": (lambda d, p: [d[0], d[1], dict(d[2], base_model="soupp")], ("document 2", "'soupp'", "documents:")),
    "later": (lambda d, p: [dict(d[0], base_model="sphere"), d[1], d[2]], ("document 0", "'sphere'", "later")),
    "cycle": (lambda d, p: [dict(d[0], models=[dict(model="sphere", parameters=dict(weight=1))]), d[1], d[2]],
              ("a cycle", "'sphere'")),
    "itself": (lambda d, p: [d[0], dict(d[1], models=[dict(model=p["base"]), dict(model="sphere")]), d[2]],
               ("a cycle", "names itself")),
    "duplicate": (lambda d, p: [d[0], dict(d[1], name="soup"), d[2]], ("'soup' twice",)),
    "unnamed early": (lambda d, p: [{k: v for k, v in d[0].items() if k != "name"}, d[1], d[2]],
                      ("document 0", "expected a name")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_chains_exit_2_and_write_nothing(fam, tmp_path, capsys, case):
    broken, words = BAD[case]
    docs = broken(chain(fam), fam)
    recipe = write(tmp_path / "chain.yml", docs)
    inter = tmp_path / "intermediate"
    assert main(["merge", recipe, str(tmp_path / "out"), "--intermediate-dir", str(inter)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists() and not inter.exists()
