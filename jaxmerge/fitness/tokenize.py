"""Host-side tokenisation, done once: prompts rendered from the task template, then left-padded int32 arrays.

Left padding puts every prompt's last token in the same slot, so greedy decoding writes new tokens at one
shared cache position and the position ids are `cumsum(mask) - 1` (`model.default_positions`), exactly as HF
generate does. Lengths are rounded up to a multiple of `PAD_TO` so tasks of similar size share compilations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.files import check_regular
from jaxmerge.fitness.tasks import Item, Task

PAD_TO = 8
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
OTHER_FILES = ("special_tokens_map.json", "added_tokens.json", "merges.txt", "chat_template.jinja",
               "chat_template.json", "generation_config.json")
FEWSHOT_SEED = 1234


def load_tokenizer(model_dir: str | Path):
    """The model directory's own tokenizer via AutoTokenizer, offline; a missing one is a user error."""
    model_dir = Path(model_dir)
    present = [f for f in TOKENIZER_FILES if (model_dir / f).exists()]
    expect(bool(present), f"expected tokenizer files {list(TOKENIZER_FILES[:3])} in {model_dir}, found none")
    for name in (*present, *OTHER_FILES):
        if (model_dir / name).exists():
            check_regular(model_dir / name, f"a tokenizer file {name}")  # a FIFO would hang the loader
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken tokenizer
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise JaxmergeError(f"expected a loadable tokenizer in {model_dir}, found: {message}") from None


def pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def eos_ids(tokenizer) -> tuple[int, ...]:
    """EOS ids to stop on: the tokenizer's EOS (a list in some chat models' generation configs)."""
    eos = tokenizer.eos_token_id
    return () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def fewshot_examples(task: Task, pool: list[Item], item: Item) -> list[Item]:
    """`task.fewshot` examples drawn with a fixed seed (the same for every item), never the item itself."""
    if not task.fewshot:
        return []
    rng = np.random.default_rng(FEWSHOT_SEED)
    order = [pool[i] for i in rng.permutation(len(pool)) if pool[i].prompt != item.prompt]
    expect(len(order) >= task.fewshot, f"task {task.name}: expected at least {task.fewshot} few-shot examples "
                                       f"in split {task.fewshot_split!r}, found {len(order)}")
    return order[:task.fewshot]


def continuation(context: str, answer: str) -> str:
    """The answer as it follows the prompt: one space between them unless either side already has one."""
    return answer if not context or context[-1].isspace() or answer[:1].isspace() else " " + answer


def render(task: Task, tokenizer, item: Item, shots: list[Item]) -> str:
    """Prompt text for one item: few-shot examples, then the templated prompt (or the chat-template version)."""
    fill = task.template.replace
    if task.chat_template:
        expect(tokenizer.chat_template is not None, f"task {task.name}: chat_template is true but the tokenizer "
                                                    "has no chat template")
        messages = [m for s in shots for m in ({"role": "user", "content": fill("{prompt}", s.prompt)},
                                              {"role": "assistant", "content": s.answer})]
        messages.append({"role": "user", "content": fill("{prompt}", item.prompt)})
        return apply_chat_template(task, tokenizer, messages)
    parts = [(q := fill("{prompt}", s.prompt)) + continuation(q, s.answer) + "\n\n" for s in shots]
    return "".join(parts) + fill("{prompt}", item.prompt)


def apply_chat_template(task: Task, tokenizer, messages: list[dict]) -> str:
    """The tokenizer's chat template rendered; a template that does not parse, raises or returns no text is the
    checkpoint's fault, named in one line (jinja2 and transformers raise many types)."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:
        raise JaxmergeError(f"task {task.name}: expected the tokenizer's chat template to render, found: "
                            f"{_first_line(e)}") from None
    expect(isinstance(text, str), f"task {task.name}: expected the chat template to render text, found "
                                  f"{type(text).__name__}")
    return text


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def encode_text(task: Task, tokenizer, text: str, special: bool = False) -> list[int]:
    """Token ids of `text`; a tokenizer that fails on it is named in one line (not a traceback)."""
    try:
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])
    except Exception as e:
        raise JaxmergeError(f"task {task.name}: expected the tokenizer to encode {text[:40]!r}, found: "
                            f"{_first_line(e)}") from None


def encode_prompt(task: Task, tokenizer, text: str) -> list[int]:
    """A chat-rendered prompt already holds its special tokens; a plain one gets the tokenizer's BOS rule."""
    ids = encode_text(task, tokenizer, text, special=not task.chat_template)
    expect(len(ids) > 0, f"task {task.name}: expected a non-empty prompt, found {text!r} tokenised to nothing")
    return ids


def padded_length(n: int) -> int:
    return max(PAD_TO, -(-n // PAD_TO) * PAD_TO)


def left_pad(rows: list[list[int]], length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """int32 tokens and mask [len(rows), length], each row right-aligned."""
    tokens = np.full((len(rows), length), pad, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        if row:
            tokens[i, length - len(row):] = row
            mask[i, length - len(row):] = 1
    return tokens, mask
