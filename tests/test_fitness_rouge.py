"""rouge_l against rouge-score itself: its own word tokeniser, characters (languages without spaces), the
model's tokens, and the best over several references."""
import pytest
from rouge_score import rouge_scorer

from jaxmerge.fitness.rouge import rouge_l_scorer
from tests.vlm_tiny import char_tokenizer_with_image


class Split:
    def __init__(self, fn):
        self.tokenize = fn


def reference(kind, text, ref, tokenizer=None):
    split = {"words": None, "chars": Split(lambda t: [c for c in t if not c.isspace()]),
             "model": Split(lambda t: [str(i) for i in tokenizer(t, add_special_tokens=False)["input_ids"]])}[kind]
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=split).score(ref, text)["rougeL"].fmeasure


@pytest.mark.parametrize("kind", ["words", "chars", "model"])
def test_rouge_l_equals_rouge_score(kind):
    tok = char_tokenizer_with_image()
    ours = rouge_l_scorer(kind, tok)
    for text, refs in [("a red box on the left", ["the red box", "a box left"]), ("3 cats", ["three cats"]),
                       ("", ["x"])]:
        assert ours(text, refs) == max(reference(kind, text, r, tok) for r in refs)


def test_characters_score_text_without_spaces():
    text, ref = "赤い箱です", "赤い箱"
    assert rouge_l_scorer("words")(text, [ref]) == 0.0  # rouge-score's tokeniser keeps ASCII only
    assert rouge_l_scorer("chars")(text, [ref]) == pytest.approx(2 * 0.6 * 1.0 / 1.6)
