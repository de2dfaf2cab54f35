"""The one device and precision policy (bench.core.device), and that nothing bypasses it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.core import device
from bench.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
# device choices made outside bench.core.device (see the last test)
FORBIDDEN = re.compile(r'torch\.autocast\(\s*(device_type=)?"cpu"|torch\.cuda\.is_available\(\)'
                       r'|\.to\(\s*"cuda"|\.cuda\(\)')


@pytest.fixture(autouse=True)
def _fresh_policy():
    device.reset()
    yield
    device.reset()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend torch sees two GPUs; record set_device calls instead of making them."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return calls


def _one_line_usage_error(spec):
    with pytest.raises(UsageError) as err:
        device.resolve_device(spec)
    message = str(err.value)
    assert "\n" not in message and "--device" in message
    return message


def test_auto_and_cpu_without_cuda(no_cuda):
    assert device.resolve_device() == torch.device("cpu")
    assert device.resolve_device("auto") == torch.device("cpu")
    assert device.resolve_device(" CPU ") == torch.device("cpu")


def test_cuda_without_cuda_is_one_line_error(no_cuda):
    for spec in ("cuda", "cuda:0"):
        message = _one_line_usage_error(spec)
        assert "--device cpu" in message  # says what to do


@pytest.mark.parametrize("spec", ["cuda:x", "tpu", "cuda:", "gpu", "cuda:-1", "mps", ""])
def test_bad_specs_are_one_line_errors(spec, no_cuda):
    message = _one_line_usage_error(spec)
    assert "auto, cpu, cuda or cuda:N" in message


def test_cuda_resolution_with_gpus(two_gpus, monkeypatch):
    assert device.resolve_device("auto") == torch.device("cuda", 0)
    assert device.resolve_device("cuda") == torch.device("cuda", 0)
    assert device.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert "cuda:0..cuda:1" in _one_line_usage_error("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # under accelerate launch: this process's GPU
    assert device.resolve_device("auto") == torch.device("cuda", 1)


def test_default_policy_and_describe(no_cuda):
    assert device.current() == device.Policy(torch.device("cpu"), torch.float32)
    assert device.describe() == {"device": "cpu", "dtype": "float32"}


def test_set_current_and_using(two_gpus):
    policy = device.set_current("cuda:1", "bf16")
    assert policy.device == torch.device("cuda", 1) and policy.dtype == torch.bfloat16
    assert two_gpus == [torch.device("cuda", 1)]  # "cuda" elsewhere means the same GPU
    assert device.describe() == {"device": "cuda:1", "dtype": "bfloat16"}
    with device.using("cpu", torch.float16) as inner:
        assert inner is device.current()
        assert device.describe() == {"device": "cpu", "dtype": "float16"}
    assert device.current() is policy
    device.reset()
    assert device.describe()["dtype"] == "float32"


def test_bad_dtype_is_one_line_error():
    with pytest.raises(UsageError, match=r"^dtype int8: expected float32, bfloat16 or float16$"):
        device.set_current("cpu", "int8")


def test_autocast_float32_is_a_no_op():
    with device.autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    # a no-op, not a switch-off: an enclosing autocast stays on
    with torch.autocast("cpu", dtype=torch.bfloat16), device.autocast("cpu", "float32"):
        assert torch.is_autocast_enabled("cpu")


def test_autocast_bf16_on_cpu():
    a = torch.ones(2, 2)
    with device.autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (a @ a).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
    assert (a @ a).dtype == torch.float32


def test_autocast_defaults_to_the_run_policy(no_cuda):
    with device.autocast():  # float32 by default: nothing changes
        assert not torch.is_autocast_enabled("cpu")
    with device.using("cpu", "bf16"), device.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")


def test_autocast_device_type_follows_the_device(monkeypatch):
    made = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, **kw: made.append(
        (device_type, kw)))
    device.autocast("cuda:1", torch.float16)
    device.autocast(torch.device("cpu"), "bf16")
    device.no_autocast("cuda")
    assert made == [("cuda", {"dtype": torch.float16}), ("cpu", {"dtype": torch.bfloat16}),
                    ("cuda", {"enabled": False})]


@pytest.mark.parametrize("line", ['with torch.autocast("cpu", dtype=x):',
                                  'torch.autocast(device_type="cpu", enabled=False)',
                                  "if torch.cuda.is_available():", 'm = m.to("cuda")',
                                  "m.cuda()"])
def test_the_bypass_pattern_catches(line):
    assert FORBIDDEN.search(line)


def test_no_autocast_switches_off_an_enclosing_one():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with device.no_autocast("cpu"):
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")


def test_trainer_accelerator_follows_the_policy(monkeypatch):
    import accelerate

    from methods import trainer

    made = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: made.append(kwargs))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trainer._accelerator("no")  # CPU machine: as before, no cpu=True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    trainer._accelerator("bf16")  # GPU machine, auto: accelerate's own GPU
    with device.using(torch.device("cpu")):
        trainer._accelerator("bf16")  # GPU machine, --device cpu
    assert [m["cpu"] for m in made] == [False, False, True]


def test_importable_without_torch():
    code = ("import sys; import bench.core.device as d; "
            "assert 'torch' not in sys.modules, 'bench.core.device imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_no_device_choice_bypasses_the_policy():
    allowed = ROOT / "bench" / "core" / "device.py"
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for folder in ("bench", "methods")
            for path in sorted((ROOT / folder).rglob("*.py")) if path != allowed
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if FORBIDDEN.search(line)]
    assert not hits, "choose devices through bench.core.device:\n" + "\n".join(hits)
