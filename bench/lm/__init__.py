"""The ``lm`` suite: bits per byte on held-out text, for cross-tokenizer distillation."""
