"""Every public function, class, method and property carries a docstring."""

import importlib
import inspect

import pytest

PACKAGES = ["bayes_et.params", "bayes_et.expfam", "bayes_et.data", "bayes_et.et",
            "bayes_et.train", "bayes_et.cavi", "bayes_et.cavi.examples"]


def _public(package: str):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items() if not n.startswith("_") and (
            inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == module.__name__]
    for name in names:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{package}.{name}", obj
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(value, (classmethod, staticmethod)):
                    value = value.__func__
                if inspect.isfunction(value) or isinstance(value, property):
                    yield f"{package}.{name}.{attr}", getattr(obj, attr, value) if not isinstance(
                        value, property) else value


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_is_documented(package):
    missing = [name for name, obj in _public(package) if not inspect.getdoc(obj)]
    assert missing == []
