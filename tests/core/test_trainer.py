"""The shared trainer: exact resume, accumulation, NaN guard, schedules, vocab check."""

import json

import pytest
import torch

from bench.errors import UsageError
from methods.trainer import (
    StepOutput,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    check_same_vocabulary,
    lr_lambda,
)


class Interrupt(Exception):
    pass


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(),
                               torch.nn.Linear(16, 1))


def make_data(n=23):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(-1, keepdim=True)
    return [(x[i], y[i]) for i in range(n)]


def collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def mse_step(model, batch):
    x, y = batch
    return StepOutput(torch.nn.functional.mse_loss(model(x), y), n_tokens=len(x))


def train(tmp, *, steps=12, interrupt_at=None, step_fn=mse_step, **overrides):
    cfg = TrainConfig(max_steps=steps, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2,
                      checkpoint_every=3, progress=False, **overrides)
    calls = {"n": 0}

    def fn(model, batch):
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] > interrupt_at:
            raise Interrupt()
        return step_fn(model, batch)

    trainer = Trainer(make_model(), fn, make_data(), cfg, tmp, collate_fn=collate)
    return trainer.train(), trainer


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    reference, _ = train(tmp_path / "ref")
    with pytest.raises(Interrupt):
        train(tmp_path / "cut", interrupt_at=15)  # dies in the middle of step 8 (epoch 2)
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == ["step-00000003", "step-00000006"]
    resumed, trainer = train(tmp_path / "cut")
    for name, tensor in weights(reference).items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == list(range(1, 13))  # no duplicated steps
    ref_rows = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").open()]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows], rel=1e-6)
    assert trainer.state["step"] == 12
    from methods.trainer import logged_train_seconds

    # training time counts each of the 12 steps once, across the interruption
    assert logged_train_seconds(tmp_path / "cut") == round(sum(r["seconds"] for r in rows), 3)
    assert logged_train_seconds(tmp_path / "cut") > 0
    assert logged_train_seconds(tmp_path / "missing") is None


def test_a_rerun_says_whether_it_resumes_or_loads_a_finished_phase(tmp_path, capsys):
    with pytest.raises(Interrupt):
        train(tmp_path, interrupt_at=15)
    capsys.readouterr()
    train(tmp_path)
    assert "resuming from step 6 of 12" in capsys.readouterr().out
    train(tmp_path)  # every step is done: nothing is resumed, the last checkpoint is loaded
    out = capsys.readouterr().out
    assert "already trained (12 of 12 steps): loading" in out and "resuming" not in out


def test_training_reduces_loss(tmp_path):
    _, trainer = train(tmp_path, steps=30, schedule="constant")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(r["tokens"] > 0 for r in rows)


def test_gradient_accumulation_matches_large_batch(tmp_path):
    data = make_data(16)

    def run(batch_size, accum, out):
        cfg = TrainConfig(max_steps=2, batch_size=batch_size, grad_accum=accum, lr=1e-2,
                          progress=False, max_grad_norm=None, schedule="constant")
        model = torch.nn.Linear(4, 1)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        return Trainer(model, mse_step, data, cfg, out, collate_fn=collate).train()

    a = run(8, 1, tmp_path / "a")
    b = run(4, 2, tmp_path / "b")
    torch.testing.assert_close(a.weight, b.weight, atol=1e-6, rtol=1e-5)


def test_nan_steps_are_skipped_then_abort(tmp_path):
    state = {"n": 0}

    def sometimes_nan(model, batch):
        state["n"] += 1
        out = mse_step(model, batch)
        if state["n"] in (3, 4):  # the two micro-batches of step 2
            out.loss = out.loss * float("nan")
        return out

    with pytest.warns(UserWarning, match="non-finite"):
        model, trainer = train(tmp_path / "a", steps=4, step_fn=sometimes_nan)
    assert trainer.state["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())

    def always_nan(model, batch):
        out = mse_step(model, batch)
        out.loss = out.loss * float("inf")
        return out

    with pytest.warns(UserWarning), pytest.raises(TrainingDiverged) as info:
        train(tmp_path / "b", steps=10, step_fn=always_nan, max_nonfinite=3)
    message = str(info.value)
    assert "3 non-finite steps in a row" in message and "lower the learning rate" in message
    assert info.value.exit_code == 3


def test_schedules():
    cfg = TrainConfig(max_steps=10, warmup_steps=2, schedule="linear")
    f = lr_lambda(cfg)
    assert [round(f(s), 3) for s in (0, 1, 2, 10)] == [0.5, 1.0, 1.0, 0.0]
    cos = lr_lambda(TrainConfig(max_steps=10, schedule="cosine"))
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda(TrainConfig(max_steps=10, schedule="exp"))(3)


def test_empty_dataset_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="training set is empty"):
        Trainer(make_model(), mse_step, [], TrainConfig(max_steps=1), tmp_path)


class FakeTok:
    def __init__(self, vocab):
        self.vocab = vocab

    def __len__(self):
        return len(self.vocab)

    def get_vocab(self):
        return self.vocab


def test_vocabulary_mismatch_names_both_models():
    check_same_vocabulary("t", FakeTok({"a": 0}), "s", FakeTok({"a": 0}))
    with pytest.raises(UsageError) as info:
        check_same_vocabulary("SmolLM2", FakeTok({"a": 0, "b": 1}), "gemma", FakeTok({"a": 0}))
    assert "'SmolLM2'" in str(info.value) and "'gemma'" in str(info.value)


def test_trained_model_evaluates_in_float32_after_bf16_training(tmp_path):
    """The model train() returns must not keep accelerate's bf16 autocast forward: results
    record fp32 evaluation."""
    model, _ = train(tmp_path, steps=3, mixed_precision="bf16")
    model.eval()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        h = torch.relu(x @ model[0].weight.T + model[0].bias)
        expected = h @ model[3].weight.T + model[3].bias
        got = model(x)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_is_transformers_after_warmup(schedule):
    import torch
    from transformers import get_scheduler

    from methods.trainer import TrainConfig, lr_lambda, total_steps

    cfg = TrainConfig(max_steps=50, warmup_steps=5, schedule=schedule)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_scheduler(schedule, optimizer, num_warmup_steps=5, num_training_steps=50)
    ours = lr_lambda(cfg)
    for step in range(50):
        if step >= 5:
            assert ours(step) == pytest.approx(theirs.lr_lambdas[0](step))
        else:  # warm-up: ours starts at 1/5, transformers' at 0
            assert ours(step) == pytest.approx((step + 1) / 5)
    assert total_steps(10, 4, 2) == 6 and total_steps(10, 4, 2, grad_accum=2) == 4
    assert total_steps(0, 4, 3) == 1 and total_steps(10, 4, 2, max_steps=7) == 7
