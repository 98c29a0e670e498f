"""Test configuration: float64 on, and silent promotion turned into errors.

Strict dtype promotion and rank promotion set to raise (the Equinox lesson in
DESIGN.md §4): a hand-written gradient that broadcasts or promotes silently
fails loudly here instead of passing with the wrong shape or precision.
"""
import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
