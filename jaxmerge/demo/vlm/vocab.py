"""The VLM world's words, its word-level tokenizer (with the processor's "<image>" token) and its LLaVA
processor: what `AutoProcessor` loads from every model directory of the world.

One token per word, as in the text demo (jaxmerge.demo.vocab), so answers decode to exactly the words trained and
word ROUGE-L counts the words a model got right.
"""
from __future__ import annotations

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<image>")
STRUCTURE = ("\n", "Q:", "A:", "E", "J", "?", "none", "|")
COLOURS_E = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES_E = ("square", "cross", "hbar", "vbar", "diag", "dot")
COLOURS_J = ("aka", "midori", "ao", "kiiro", "murasaki", "mizu")
SHAPES_J = ("shikaku", "batsu", "yoko", "tate", "naname", "ten")
WORDS = SPECIALS + STRUCTURE + COLOURS_E + SHAPES_E + COLOURS_J + SHAPES_J
PAD, BOS, EOS, UNK, IMAGE = 0, 1, 2, 3, 4
IMAGE_TOKEN = "<image>"


def tokenizer():
    """A transformers fast tokenizer over WORDS: spaces separate words, a newline is a word, <bos> first."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    tok.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def processor(image_size: int, patch_size: int):
    """LLaVA's processor: CLIP's image preprocessing at the tower's size and one image token per patch."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor
    images = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(images, tokenizer(), patch_size=patch_size, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1)

