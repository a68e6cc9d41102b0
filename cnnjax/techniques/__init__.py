"""Techniques: pure, jit-compiled functions over a model's parameters."""
