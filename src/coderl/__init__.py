"""coderl: CodeRL (Le et al., NeurIPS 2022) — actor, critic, execution rewards, critic sampling."""

__version__ = "0.1.0"


def lazy_exports(package: str, names: dict[str, str]):
    """A package's ``__getattr__`` that imports ``names`` (name -> submodule) on first use."""
    def __getattr__(name: str):
        if name in names:
            import importlib

            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
