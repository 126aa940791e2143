"""coderl: CodeRL (Le et al., NeurIPS 2022) — actor, critic, execution rewards, critic sampling."""

__version__ = "0.1.0"
