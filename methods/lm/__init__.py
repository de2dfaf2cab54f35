"""Recipes of the ``lm`` suite (cross-tokenizer distillation), one file per method."""
