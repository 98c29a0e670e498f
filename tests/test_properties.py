"""Property-based: hand-written gradients equal autodiff's for random sizes, lengths,
masks, resets, cells and architectures (hypothesis draws them; float64)."""
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the [test] extra")
from hypothesis import given, settings, strategies as st  # noqa: E402

import jrnn  # noqa: E402
from jrnn.gradcheck import ARCHITECTURES, TRUNCATED_BPTT, Sizes, check  # noqa: E402

ARCHS = sorted(ARCHITECTURES) + [TRUNCATED_BPTT.name]


@settings(max_examples=20, deadline=None, derandomize=True)
@given(arch=st.sampled_from(ARCHS), cell=st.sampled_from(jrnn.cells.names()),
       T=st.integers(1, 7), B=st.integers(1, 4), D=st.integers(1, 3), H=st.integers(1, 5),
       C=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_hand_written_gradients_equal_autodiff(arch, cell, T, B, D, H, C, seed):
    # The seed draws the weights, inputs, labels, masks and reset flags;
    # the sizes draw ragged lengths from T down to 1.
    import jax.numpy as jnp
    errors = check(arch, cell, Sizes(T, B, D, H, C), jnp.float64, seed)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-10, (worst, errors[worst])
