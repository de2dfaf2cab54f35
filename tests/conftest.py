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


TOY_PLUGIN = '''
"""A toy suite and recipe for CLI tests: run only builds a record, so a run takes ms."""
REGISTRY = [{"name": "toy-method", "suites": ["toy"], "target": "ToyRecipe",
             "summary": "a toy recipe", "citation": "none"}]

from bench.core.results import new_record
from bench.suite import DatasetSpec, Setting, Suite, SuiteMetadata

TOY = SuiteMetadata(
    name="toy", version="1", summary="a toy suite", citation="none", family="generation",
    main_score="score", baseline="toy-method",
    datasets=(DatasetSpec("toy/data", "three items", stands_in_for="nothing"),),
    settings=(Setting("n_items", "int", 3, "items", min=1),
              Setting("scale", "float", 1.0, "a factor", min=0, max=10)))


class ToyRecipe:
    settings_keys = ("epochs",)

    def build_model(self, context):
        return None, "toy-model"


class ToySuite(Suite):
    metadata = TOY

    def run(self, options):
        from bench.contracts import resolve_recipe

        settings = self.resolve_settings(options, resolve_recipe(options.method, "toy"))
        n = options.limit or settings["n_items"]
        scores = {f"i{k}": settings["scale"] * (k % 2) / 10 for k in range(n)}
        return [new_record(suite="toy", suite_version="1",
                           dataset={"id": "toy/data", "checksum": "unknown", "split": "test",
                                    "offline_stand_in": True, "num_items": n},
                           method=options.method, model="toy-model", seed=options.seed,
                           preset=options.preset, main_score="score",
                           metrics={"score": sum(scores.values()) / n, "latency_s": 0.5},
                           per_item={"score": scores}, config=dict(settings))]
'''


@pytest.fixture
def plugin_folder(tmp_path, monkeypatch):
    """A ``DISTILLBENCH_PLUGINS`` folder (and a private cache); the registries read it
    afresh, and again after the test."""
    from bench.suite import SUITES
    from methods import METHODS
    from methods.losses import LOSSES

    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.setenv("DISTILLBENCH_PLUGINS", str(folder))
    monkeypatch.setenv("DISTILLBENCH_CACHE", str(tmp_path / "cache"))
    registries = (METHODS, LOSSES, SUITES)
    for registry in registries:
        registry.reset()
    yield folder
    monkeypatch.delenv("DISTILLBENCH_PLUGINS")
    for registry in registries:
        registry.reset()


@pytest.fixture
def toy(plugin_folder):
    """The toy plug-in suite installed; returns the test's tmp folder."""
    (plugin_folder / "toy.py").write_text(TOY_PLUGIN)
    return plugin_folder.parent
