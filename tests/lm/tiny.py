"""A second tiny tokenizer for cross-tokenizer tests: characters instead of words.

``tests/conftest.py``'s :func:`word_tokenizer` splits on whitespace; cross-tokenizer
distillation needs a teacher that cuts the same text differently and has another
vocabulary size. :func:`char_tokenizer` gives every character its own token and, like
Gemma, adds a BOS token to every text; :func:`save_char_lm` saves it with a tiny Llama.
"""

from __future__ import annotations

import string
from pathlib import Path

from conftest import tiny_llama

ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n\té"


def char_tokenizer(alphabet: str = ALPHABET) -> object:
    """``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, then one token per character."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *alphabet])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                           special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                   unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")


def save_char_lm(path: Path, **model: object) -> Path:
    """A tiny Llama over :func:`char_tokenizer`'s vocabulary (long contexts: characters)."""
    tokenizer = char_tokenizer()
    tiny_llama(len(tokenizer), bos_token_id=2, eos_token_id=3, pad_token_id=0,
               max_positions=4096, **model).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
