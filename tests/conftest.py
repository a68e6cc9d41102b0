"""Strict test settings: warnings are errors (pyproject), rank promotion raises."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
