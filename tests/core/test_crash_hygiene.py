"""Crash hygiene of training: quiet checkpoints of tied models, pickle-free RNG state."""

import json
import logging
import pickle
import warnings

import pytest
import torch
from conftest import tiny_llama

from methods.trainer import RNG_FILE, STATE_FILE, TrainConfig, Trainer


class Interrupt(Exception):
    pass


def _lm_data(n=8, length=6, vocab=24):
    g = torch.Generator().manual_seed(5)
    return [torch.randint(0, vocab, (length,), generator=g) for _ in range(n)]


def _train_tied(out, *, interrupt_after=None, steps=2):
    cfg = TrainConfig(max_steps=steps, batch_size=2, lr=1e-2, checkpoint_every=1,
                      keep_checkpoints=3, progress=False)
    calls = {"n": 0}

    def step_fn(model, batch):
        calls["n"] += 1
        if interrupt_after is not None and calls["n"] > interrupt_after:
            raise Interrupt()
        return model(input_ids=batch, labels=batch).loss

    model = tiny_llama(24, tied=True)
    trainer = Trainer(model, step_fn, _lm_data(), cfg, out, collate_fn=torch.stack)
    return trainer.train(), trainer


def test_tied_checkpoints_save_quietly_and_resume_exactly(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference, _ = _train_tied(tmp_path / "ref")
        with pytest.raises(Interrupt):
            _train_tied(tmp_path / "cut", interrupt_after=1)  # dies in step 2
        resumed, _ = _train_tied(tmp_path / "cut")
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text, *(str(w.message) for w in caught)):
        assert "Removed shared tensor" not in text
    assert not [w for w in caught if "RNG" in str(w.message)]
    # the embeddings are still tied after resume, and the weights match the uninterrupted run
    assert resumed.lm_head.weight is resumed.model.embed_tokens.weight
    ref = reference.state_dict()
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(tensor, ref[name]), name
    checkpoint = tmp_path / "cut" / "checkpoints" / "step-00000001"
    assert (checkpoint / STATE_FILE).is_file()
    rng = json.loads((checkpoint / f"{RNG_FILE}_0.json").read_text())
    assert set(rng) >= {"python", "numpy", "torch"}
    assert not list(checkpoint.glob(f"{RNG_FILE}_*.pt"))


class _Planted:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _mse_setup(tmp_path, steps):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3),
                                torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, generator=g), torch.randn(1, generator=g)) for _ in range(12)]

    def step(m, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    cfg = TrainConfig(max_steps=steps, batch_size=4, lr=1e-2, checkpoint_every=1,
                      progress=False)
    return Trainer(model, step, data, cfg, tmp_path,
                   collate_fn=lambda items: (torch.stack([x for x, _ in items]),
                                             torch.stack([y for _, y in items])))


def test_old_pickled_rng_file_is_never_unpickled(tmp_path):
    _mse_setup(tmp_path, steps=1).train()
    checkpoint = tmp_path / "checkpoints" / "step-00000001"
    (checkpoint / f"{RNG_FILE}_0.json").unlink()
    marker = tmp_path / "pwned"
    with (checkpoint / f"{RNG_FILE}_0.pt").open("wb") as handle:
        pickle.dump(_Planted(marker), handle)
    with pytest.warns(UserWarning, match=r"old pickled RNG file, not loaded"):
        _mse_setup(tmp_path, steps=2).train()
    assert not marker.exists()


def test_malformed_rng_file_is_a_warning_and_changes_nothing(tmp_path):
    import random

    import numpy as np

    from methods.trainer import _rng_states, _set_rng_states

    _mse_setup(tmp_path, steps=1).train()
    path = tmp_path / "checkpoints" / "step-00000001" / f"{RNG_FILE}_0.json"
    good = json.loads(path.read_text())
    bad = {**good, "torch": good["torch"][:-8]}  # a truncated generator state
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = _rng_states()
    with pytest.raises(RuntimeError):
        _set_rng_states(bad)
    assert _rng_states() == before  # all or nothing: python and numpy were rolled back
    path.write_text(json.dumps(bad))
    trainer = _mse_setup(tmp_path, steps=2)
    with pytest.warns(UserWarning, match="unreadable RNG state"):
        assert trainer.resume()
    assert trainer.state["step"] == 1
    _set_rng_states(good)
    assert _rng_states() == good  # the JSON round trip is exact


def test_remove_empty_undoes_only_the_folders_a_run_made_and_keeps_any_file(tmp_path):
    from bench.core.io import missing_dirs, remove_empty

    (tmp_path / "existing").mkdir()
    made = missing_dirs(tmp_path / "existing" / "a" / "b")
    assert made == [tmp_path / "existing" / "a" / "b", tmp_path / "existing" / "a"]
    (tmp_path / "existing" / "a" / "b" / "gsm8k" / "empty").mkdir(parents=True)
    remove_empty(made)
    assert not (tmp_path / "existing" / "a").exists() and (tmp_path / "existing").is_dir()
    made = missing_dirs(tmp_path / "w")
    (tmp_path / "w" / "cache" / "empty").mkdir(parents=True)
    (tmp_path / "w" / "cache" / "model.bin").write_bytes(b"x")
    remove_empty(made)
    assert (tmp_path / "w" / "cache" / "model.bin").is_file()
    assert not (tmp_path / "w" / "cache" / "empty").exists()
