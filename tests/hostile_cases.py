"""The hostile cases of tests/test_hostile.py: name -> (build(ctx) -> argv, exit code, word the line names).
The builders and broken inputs are in tests/hostile_inputs.py."""
from __future__ import annotations

import json

import yaml

from tests.hostile_inputs import (
    CHAT,
    DEEP,
    DISK_FULL,
    GEN,
    LAUGHS,
    LOGLIK,
    LONG,
    ROW,
    TENSOR,
    chat,
    config,
    dangling,
    demo,
    device_config,
    eval_,
    eval_full_injected,
    evolve,
    fail_writes,
    fifo,
    fifo_shard,
    fifo_split,
    fifo_tokenizer,
    free_port,
    full_disk,
    giant,
    header,
    header_entry,
    header_length,
    index,
    inspect,
    leftover,
    link_to,
    merge,
    model,
    parked,
    readonly_merge,
    sharded,
    surrogate_row,
    text,
    unresolvable,
    user_dir,
)

CASES = {
    # inspect: headers
    "inspect header length beyond the file": (lambda c: inspect(header_length(c)), 2, "header length"),
    "inspect header claims a 2 GB tensor in a tiny file": (
        lambda c: inspect(header(c, header_entry(shape=[500_000_000], data_offsets=[0, 2_000_000_000]))), 2,
        "model.safetensors"),
    "inspect sparse 2 GB tensor, header consistent": (giant, 2, TENSOR),
    "inspect header negative dimension": (lambda c: inspect(header(c, header_entry(shape=[-64, 32]))), 2, "shape"),
    "inspect header overlapping tensors": (
        lambda c: inspect(header(c, header_entry(data_offsets=[0, 64 * 32 * 4]))), 2, "model.safetensors"),
    "inspect header 5001-digit number": (lambda c: inspect(header(c, lambda h: json.dumps(h).replace(
        '"F32"', '"F32", "x": ' + LONG, 1).encode())), 2, "5001"),
    "inspect header nested 100000 deep": (lambda c: inspect(header(c, lambda h: b'{"a": ' + DEEP.encode() + b"}")),
                                          2, "nested"),
    "inspect header not utf-8": (lambda c: inspect(header(c, lambda h: b'{"\xff": 1}')), 2, "UTF-8"),
    "inspect header unknown dtype": (lambda c: inspect(header(c, header_entry(dtype="F128"))), 2, "F128"),
    # inspect: config.json
    "inspect num_hidden_layers 10**9": (lambda c: inspect(config(model(c), num_hidden_layers=10**9)), 2,
                                        "num_hidden_layers"),
    "inspect hidden_size 10**12": (lambda c: inspect(config(model(c), hidden_size=10**12, head_dim=8)), 2,
                                   "config.json"),
    "inspect config 5001-digit number": (lambda c: inspect(text(model(c) / "config.json", '{"vocab_size": '
                                                               + LONG + "}").parent), 2, "5001"),
    "inspect config nested 100000 deep": (lambda c: inspect(text(model(c) / "config.json", '{"a": ' + DEEP + "}")
                                                            .parent), 2, "nested"),
    "inspect config NaN": (lambda c: inspect(text(model(c) / "config.json", '{"rms_norm_eps": NaN}').parent), 2,
                           "NaN"),
    "inspect config 1e999": (lambda c: inspect(text(model(c) / "config.json", '{"rope_theta": 1e999}').parent), 2,
                             "1e999"),
    "inspect layer_types a string": (lambda c: inspect(config(model(c), layer_types="full_attention")), 2,
                                     "layer_types"),
    "inspect layer_types a number": (lambda c: inspect(config(model(c), layer_types=3)), 2, "layer_types"),
    "inspect config.json is a FIFO": (lambda c: inspect(fifo(model(c) / "config.json").parent), 2, "FIFO"),
    "inspect model.safetensors is a FIFO": (lambda c: inspect(fifo(model(c) / "model.safetensors").parent), 2,
                                            "FIFO"),
    "inspect config.json is a device": (lambda c: inspect(device_config(model(c))), 2, "character device"),
    "inspect config.json of 10 MB": (lambda c: inspect(text(model(c) / "config.json", " " * 10 * 2**20).parent),
                                     2, "at most"),
    # inspect: index files
    "inspect index not utf-8": (lambda c: inspect(index(c, lambda d: b'{"weight_map": {"\xff": 1}}')), 2, "UTF-8"),
    "inspect index maps a tensor to a shard lacking it": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: "model-a.safetensors" if d["weight_map"][TENSOR] == "model-b.safetensors"
         else "model-b.safetensors"}))), 2, "missing from"),
    "inspect index shard outside the model dir": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: "../ft2/model.safetensors"}))), 2, "outside"),
    "inspect index absolute shard path": (lambda c: inspect(index(c, lambda d: d["weight_map"].update(
        {TENSOR: str(c.world / "ft2/model.safetensors")}))), 2, "outside"),
    "inspect index nested 100000 deep": (lambda c: inspect(index(c, lambda d: '{"weight_map": ' + DEEP + "}")), 2,
                                         "nested"),
    "inspect index shard is a FIFO": (lambda c: inspect(fifo_shard(sharded(c))), 2, "FIFO"),
    # inspect: what killed writers leave
    "inspect a killed writer's complete leftover": (lambda c: inspect(leftover(c)), 2, "temporary"),
    "inspect a target a killed overwrite parked": (lambda c: inspect(parked(c)), 2, "previous"),
    # merge
    "merge recipe billion laughs": (lambda c: merge(c, body=LAUGHS), 2, "alias"),
    "merge recipe nested 100000 deep": (lambda c: merge(c, body=DEEP), 2, "nested"),
    "merge recipe 5001-digit number": (lambda c: merge(c, body=f"merge_method: linear\nx: {LONG}\n"), 2, "5001"),
    "merge recipe not utf-8": (lambda c: merge(c, body=b"merge_method: \xff\n"), 2, "UTF-8"),
    "merge recipe is a FIFO": (lambda c: ["merge", str(fifo(c.tmp / "r.yml")), str(c.tmp / "merged")], 2, "FIFO"),
    "merge recipe control characters": (lambda c: merge(c, body="merge_method: linear\x1f\n"), 2, "YAML"),
    "merge --overwrite onto a user's directory": (lambda c: merge(c, user_dir(c, "thesis"), "--overwrite"), 2,
                                                  "did not write"),
    "merge into a dangling symlink": (lambda c: merge(c, dangling(c)), 2, "dangling"),
    "merge source claims 10**9 layers": (lambda c: merge(c, body=yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(config(model(c), num_hidden_layers=10**9)), "parameters": {"weight": 1.0}}]})), 2,
        "num_hidden_layers"),
    "merge disk full (injected ENOSPC)": (lambda c: (fail_writes(c, DISK_FULL), merge(c))[1], 1, "disk full"),
    "merge read-only (injected EROFS)": (readonly_merge, 1, "read-only"),
    "merge disk full (real tmpfs)": (lambda c: merge(c, c.mount("full", "16k") / "merged"), 1, "disk full"),
    "merge read-only file system (real)": (lambda c: merge(c, c.mount("ro", readonly=True) / "merged"), 1,
                                           "read-only"),
    # eval
    "eval tokenizer ids beyond the vocabulary": (lambda c: eval_(c, c.world / "small_vocab"), 2, "vocab_size"),
    "eval max_new_tokens 10**9": (lambda c: eval_(c, None, GEN + "max_new_tokens: 1000000000\n"), 2,
                                  "max_position_embeddings"),
    "eval prompt longer than the positions": (lambda c: eval_(c, None, LOGLIK, json.dumps(
        {"prompt": "1+" * 200, "answer": "2"}) + "\n"), 2, "max_position_embeddings"),
    "eval batch beyond memory": (lambda c: (c.monkeypatch.setattr("jaxmerge.runtime.available_bytes", lambda: 100),
                                            eval_(c))[1], 2, "memory"),
    "eval --batch 0": (lambda c: eval_(c, None, LOGLIK, ROW, "--batch", "0"), 2, "--batch"),
    "eval chat template raises": (lambda c: eval_(c, chat(c, "{{ raise_exception('boom') }}"), CHAT), 2,
                                  "chat template"),
    "eval chat template does not parse": (lambda c: eval_(c, chat(c, "{% for %}"), CHAT), 2, "chat template"),
    "eval lone surrogate in a prompt": (lambda c: eval_(c, None, LOGLIK, surrogate_row()), 2, "surrogate"),
    "eval jsonl 5001-digit number": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": ' + LONG + "}\n"),
                                     2, "5001"),
    "eval jsonl nested 100000 deep": (lambda c: eval_(c, None, LOGLIK, '{"prompt": ' + DEEP + "}\n"), 2, "nested"),
    "eval jsonl NaN answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": NaN}\n'), 2, "NaN"),
    "eval jsonl boolean answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": true}\n'), 2,
                                  "answer"),
    "eval jsonl exponent answer": (lambda c: eval_(c, None, LOGLIK, '{"prompt": "a", "answer": 1e3}\n'), 2,
                                   "1e3"),
    "eval task yaml billion laughs": (lambda c: eval_(c, None, LAUGHS), 2, "alias"),
    "eval split file is a FIFO": (lambda c: ["eval", str(c.world / "ft1"), fifo_split(c)], 2, "FIFO"),
    "eval tokenizer.json is a FIFO": (lambda c: eval_(c, fifo_tokenizer(model(c))), 2, "FIFO"),
    "eval --out onto an existing file": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(text(
        c.tmp / "results.jsonl", "the user's results\n"))), 2, "--overwrite"),
    "eval --out disk full (injected ENOSPC)": (eval_full_injected, 1, "disk full"),
    "eval --out disk full (real tmpfs)": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(
        full_disk(c) / "results.jsonl")), 1, "disk full"),
    "eval --out read-only file system (real)": (lambda c: eval_(c, None, LOGLIK, ROW, "--out", str(
        c.mount("ro", readonly=True) / "results.jsonl")), 1, "read-only"),
    # demo
    "demo --out a user's directory": (lambda c: demo(user_dir(c, "mine")), 2, "not touching"),
    "demo --out a symlink to a user's directory": (lambda c: demo(link_to(c, user_dir(c, "mine"))), 2, "not touching"),
    "demo --out disk full (real tmpfs)": (lambda c: demo(c.mount("full", "1m") / "demo"), 1, "disk full"),
    "demo --out read-only file system (real)": (lambda c: demo(c.mount("ro", readonly=True) / "demo"), 1,
                                                "read-only"),
    # evolve: the readers and the coordinator address (the lead adds run cases)
    "evolve config billion laughs": (lambda c: evolve(c, body=LAUGHS), 2, "alias"),
    "evolve config 5001-digit number": (lambda c: evolve(c, body=f"models: [a]\nseed: {LONG}\n"), 2, "5001"),
    "evolve --coordinator without a port": (lambda c: evolve(c, "--coordinator", "localhost"), 2, "host:port"),
    "evolve --coordinator notahost:xyz": (lambda c: evolve(c, "--coordinator", "notahost:xyz"), 2, "host:port"),
    "evolve --coordinator port 0": (lambda c: evolve(c, "--coordinator", "127.0.0.1:0"), 2, "1..65535"),
    "evolve --coordinator that does not resolve": (lambda c: (unresolvable(c), evolve(
        c, "--coordinator", "nohost.invalid:1234"))[1], 2, "resolve"),
    "evolve --coordinator unreachable": (lambda c: (c.monkeypatch.setenv("JAXMERGE_COORDINATOR_TIMEOUT", "1"), evolve(
        c, "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2", "--process-id", "1"))[1], 1,
        "unreachable"),
}
