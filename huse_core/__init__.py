"""huse_core: train a shop's own image + text HUSE model, then classify, search and map its catalogue."""

__version__ = "0.1.0"
