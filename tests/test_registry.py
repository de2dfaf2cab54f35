import sys
import textwrap

import pytest

from bench.errors import UnknownNameError, UsageError
from bench.registry import Registry


class Base:
    pass


class Good(Base):
    pass


def test_register_and_get_eager():
    reg: Registry[type[Base]] = Registry("thing", base=Base)
    reg.register("good", Good, summary="a good thing", citation="Doe 2024")
    assert reg.get("good") is Good
    assert reg.names() == ["good"]
    assert reg.entry("good").citation == "Doe 2024"
    assert "good" in reg and len(reg) == 1


def test_decorator_registration():
    reg: Registry = Registry("thing")

    @reg.register("f", summary="s")
    def f():
        return 1

    assert reg.get("f") is f


def test_duplicate_rejected():
    reg: Registry = Registry("thing")
    reg.register("a", Good)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", Good)


def test_did_you_mean_and_usage_error():
    reg: Registry = Registry("method")
    for name in ("dear", "aligndistil", "kd"):
        reg.register(name, Good)
    with pytest.raises(UnknownNameError) as info:
        reg.get("deer")
    message = str(info.value)
    assert "did you mean 'dear'?" in message
    assert "\n" not in message
    assert isinstance(info.value, UsageError)


def test_unknown_without_close_match_lists_available():
    reg: Registry = Registry("suite")
    reg.register("beir", Good)
    with pytest.raises(UnknownNameError, match="available: beir"):
        reg.get("zzzz")


def test_base_class_check_eager_and_lazy():
    reg: Registry = Registry("thing", base=Base)
    with pytest.raises(TypeError, match="must be a Base"):
        reg.register("bad", int)
    reg.register("lazy_bad", "collections:OrderedDict")  # accepted until resolved
    with pytest.raises(TypeError, match="must be a Base"):
        reg.get("lazy_bad")


def test_lazy_entry_not_imported_until_get(tmp_path, monkeypatch):
    mod = tmp_path / "lazy_mod_for_registry_test.py"
    mod.write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("thing")
    reg.register("thing", "lazy_mod_for_registry_test:Thing", summary="lazy")
    assert reg.names() == ["thing"]
    assert "lazy_mod_for_registry_test" not in sys.modules
    obj = reg.get("thing")
    assert obj.__name__ == "Thing"
    assert "lazy_mod_for_registry_test" in sys.modules


def test_lazy_entry_must_name_an_attribute():
    reg: Registry = Registry("thing")
    with pytest.raises(ValueError, match="module:attr"):
        reg.register("x", "just_a_module")
    reg.register("y", "collections:NoSuchThing")
    with pytest.raises(UsageError, match="does not exist"):
        reg.get("y")


def test_discovery_reads_literal_without_import(tmp_path, monkeypatch):
    pkg = tmp_path / "discover_pkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha.py").write_text(textwrap.dedent("""
        raise RuntimeError("must not be imported by discovery")
        REGISTRY = [{"name": "alpha", "target": "Alpha", "summary": "first",
                     "citation": "A et al. 2020", "baseline": "bm25"}]
    """))
    (pkg / "_private.py").write_text('REGISTRY = [{"name": "hidden", "target": "X"}]\n')
    (pkg / "helper.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("method", discover="discover_pkg_for_test")
    assert reg.names() == ["alpha"]
    entry = reg.entry("alpha")
    assert entry.target == "discover_pkg_for_test.alpha:Alpha"
    assert entry.meta == {"baseline": "bm25"}
    assert "discover_pkg_for_test.alpha" not in sys.modules
    with pytest.raises(RuntimeError, match="must not be imported"):
        reg.get("alpha")


def test_discovery_rejects_non_literal(tmp_path, monkeypatch):
    pkg = tmp_path / "discover_bad_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("NAME = 'x'\nREGISTRY = [{'name': NAME, 'target': 'X'}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("method", discover="discover_bad_pkg")
    with pytest.raises(ValueError, match="literal"):
        reg.names()
