"""Nothing unsafe: no code path can unpickle, run a checkpoint's own code, or reach the network.

1. Static: the package's syntax tree holds no pickle-family import, no torch.load / np.load(allow_pickle),
   no unsafe YAML loader, no eval/exec, no trust_remote_code, and every `from_pretrained` is local-only.
2. Dynamic: a checkpoint carrying a pickle payload and a tokenizer that asks for remote code is inspected,
   loaded, merged and evaluated; the payloads never run (their marker file never appears).
3. No network: with socket connects / DNS made to fail loudly, load, merge, eval and evolve all run to the end.
"""
from __future__ import annotations

import ast
import json
import pickle
import shutil
import socket
from pathlib import Path

import pytest
import yaml

import jaxmerge
from jaxmerge.cli import main
from tests.evolve_world import build_world, write_config

PACKAGE = Path(jaxmerge.__file__).parent
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
UNSAFE_CALLS = {("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                ("yaml", "load_all"), ("pickle", "loads"), ("pd", "read_pickle")}


def violations(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            found += _call_violations(node)
        elif isinstance(node, ast.Name) and node.id == "trust_remote_code":
            found.append("trust_remote_code")
    return found


def _call_violations(call: ast.Call) -> list[str]:
    func, found = call.func, []
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
    if (owner, name) in UNSAFE_CALLS or (owner == "" and name in ("eval", "exec")):
        found.append(f"{owner + '.' if owner else ''}{name}()")
    keywords = {k.arg: k.value for k in call.keywords}
    if "trust_remote_code" in keywords or keywords.get("allow_pickle") is not None:
        found.append(f"{name}(trust_remote_code/allow_pickle=...)")
    if name == "from_pretrained" and not _is_true(keywords.get("local_files_only")):
        found.append("from_pretrained without local_files_only=True")
    return found


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_package_never_unpickles_runs_remote_code_or_goes_online():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = {str(f.relative_to(PACKAGE)): v for f in files if (v := violations(ast.parse(f.read_text())))}
    assert found == {}


def test_the_checker_sees_what_it_forbids():
    bad = ("import pickle\nfrom dill import loads\ntorch.load(f)\nyaml.load(s)\nnp.load(f, allow_pickle=True)\n"
           "AutoModel.from_pretrained(p, trust_remote_code=True)\nAutoTokenizer.from_pretrained(p)\neval(s)\n")
    assert len(violations(ast.parse(bad))) == 9


# ---- dynamic: payloads that would leave a marker if anything ran them ----

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("safety_world"))


def booby_trapped(world: Path, tmp: Path) -> tuple[Path, Path]:
    """A copy of ft1 with pickle payloads beside the safetensors and a tokenizer that asks for remote code."""
    model, marker = Path(shutil.copytree(world / "ft1", tmp / "trapped")), tmp / "MARKER"
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (model / name).write_bytes(pickle.dumps(Payload(marker)))
    (model / "evil_tokenizer.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]}
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return model, marker


def test_pickles_and_remote_code_in_a_checkpoint_never_run(world, tmp_path, capsys):
    model, marker = booby_trapped(world, tmp_path)
    jaxmerge.load(model)
    codes = [main(["inspect", str(model)]),
             main(["merge", _recipe(tmp_path, model, world / "ft2"), str(tmp_path / "merged")]),
             main(["eval", str(model), str(world / "task/add.yml"), "--limit", "2"])]
    assert not marker.exists()
    assert codes[:2] == [0, 0] and codes[2] in (0, 2), capsys.readouterr().err
    custom = Path(shutil.copytree(world / "ft1", tmp_path / "custom"))
    cfg = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "evil.Model"}}))
    custom_marker = tmp_path / "custom_code_ran"
    (custom / "evil.py").write_text(f"open({str(custom_marker)!r}, 'w').write('ran')\nclass Model: pass\n")
    # Custom model code is never imported: auto_map is inert, as in transformers without trust_remote_code
    # (real Phi-3 checkpoints carry one for a class transformers has natively).
    assert main(["inspect", str(custom)]) == 0 and main(["eval", str(custom), str(world / "task/add.yml"),
                                                         "--limit", "2"]) in (0, 2)
    assert not custom_marker.exists()
    pickle.loads((model / "optimizer.pt").read_bytes())  # control: the payload does run when unpickled
    assert marker.read_text() == "unpickled!"


def _recipe(tmp: Path, *models: Path) -> str:
    doc = {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 0.5}} for m in models]}
    (tmp / "recipe.yml").write_text(yaml.safe_dump(doc))
    return str(tmp / "recipe.yml")


# ---- no network ----

@pytest.fixture
def offline(monkeypatch):
    """Every attempt to reach another machine raises (and is recorded); local (AF_UNIX) sockets still work."""
    attempts = []

    def refuse(what):
        def blocked(*args, **kwargs):
            attempts.append((what, args[1:2] if what.startswith("socket.") else args[:1]))
            raise OSError(f"test: network access blocked ({what})")
        return blocked

    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        return refuse("socket.connect")(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # prove it without the offline switches tests normally set
    return attempts


def test_the_network_block_works(offline):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert offline


@pytest.mark.slow
def test_load_merge_eval_evolve_never_touch_the_network(world, tmp_path, offline, capsys):
    jaxmerge.load(world / "ft1")
    assert main(["merge", _recipe(tmp_path, world / "ft1", world / "ft2"), str(tmp_path / "merged")]) == 0
    assert main(["eval", str(world / "ft1"), str(world / "task/add.yml"), "--limit", "4"]) == 0
    config = write_config(world, name="offline.yml", generations=1)
    assert main(["evolve", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert offline == []
