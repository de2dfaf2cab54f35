"""The one tiny-model factory of the tests, and the shared tiny chat LM fixture.

Tests never load a real checkpoint unless realism is the point (``@pytest.mark.slow``):
:func:`tiny_llama` builds a seeded random Llama of the suites' architecture in
milliseconds, :func:`word_tokenizer` a word-level tokenizer for it, and
:func:`save_tiny_lm` writes both to a folder that ``bench run --teacher`` / ``--student``
accept like any HF checkpoint. Import them with ``from conftest import ...``.
"""

from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

WORDS = "the a cat dog sat ran on mat park today summary answer question story".split()


def tiny_llama(vocab_size: int, *, layers: int = 2, seed: int | None = 0, tied: bool = True,
               max_positions: int = 256, init: float = 0.02, isolate_rng: bool = False,
               model_cls: type | None = None, **config: object) -> torch.nn.Module:
    """A random Llama (width 32, 4 heads, 2 KV heads) in eval mode, seeded by ``seed``
    (``None``: the caller's RNG state); ``isolate_rng`` leaves the global RNG untouched."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions, tie_word_embeddings=tied,
                      initializer_range=init, **config)
    with torch.random.fork_rng(devices=[], enabled=isolate_rng):
        if seed is not None:
            torch.manual_seed(seed)
        model = (model_cls or LlamaForCausalLM)(cfg)
    return model.eval()


def word_tokenizer(words: Iterable[str], *, eos: bool = True, chat: bool = False) -> object:
    """A whitespace word-level tokenizer: ``<pad>`` 0, ``<unk>`` 1, ``<eos>`` 2 (if ``eos``),
    then ``words``; ``chat`` adds a minimal chat template (turns, then ``:``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>"] + (["<eos>"] if eos else [])
    vocab = {w: i for i, w in enumerate([*specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>",
                                        unk_token="<unk>", eos_token="<eos>" if eos else None)
    if chat:
        tokenizer.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                                   "{% if add_generation_prompt %}: {% endif %}")
    return tokenizer


def save_tiny_lm(path: Path, words: Iterable[str], *, eos: bool = True, chat: bool = False,
                 **model: object) -> Path:
    """:func:`tiny_llama` over :func:`word_tokenizer`'s vocabulary, saved to ``path``."""
    tokenizer = word_tokenizer(words, eos=eos, chat=chat)
    if eos:
        model = {"eos_token_id": 2, "pad_token_id": 0, **model}
    tiny_llama(len(tokenizer), **model).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """A 2-layer random Llama with a word-level tokenizer and a minimal chat template."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-chat-llama"), [":", *WORDS], chat=True,
                        max_positions=512)
