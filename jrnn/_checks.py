"""Argument checks that run at trace time and name the offending argument.

Shapes and dtypes are static under ``jax.jit``, so every check here raises
while the function is being traced, before anything is compiled. Messages
follow one pattern: ``"<argument>: expected <what>, got <what>"``.
"""
from __future__ import annotations

from typing import Any, Sequence

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

BACKWARDS = ("manual", "autodiff")


def fail_shape(name: str, expected: str, actual: Sequence[int], hint: str = "") -> None:
    msg = f"{name}: expected shape {expected}, got {tuple(actual)}"
    raise ValueError(msg + (f"; {hint}" if hint else ""))


def floating(name: str, x: Any) -> None:
    """Raises TypeError unless ``x`` is an array of a floating dtype."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {dtype}")


def integer(name: str, x: Any, what: str = "class indices") -> None:
    """Raises TypeError unless ``x`` has an integer dtype; ``what`` says what the
    integers are, for the message (class indices, lengths, ...)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name}: expected an integer dtype ({what}), got {dtype}")


def array(name: str, x: Any) -> Any:
    """``x`` as a JAX array: JAX arrays and tracers pass unchanged; numpy arrays,
    Python lists, tuples and scalars are converted (``jnp.asarray``, so their
    dtype follows JAX's defaults). Anything else (a torch tensor, a string) is
    a TypeError naming the argument, rather than an error deep inside JAX."""
    if x is None or isinstance(x, (jax.Array, jax.core.Tracer)):
        return x
    if isinstance(x, (np.ndarray, np.generic, list, tuple, bool, int, float)):
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: expected an array or a (nested) list of numbers, got "
                            f"a {type(x).__name__} that is not one ({e})") from None
    hint = "; convert it with .numpy() (torch: .detach().cpu().numpy())" \
        if hasattr(x, "numpy") else ""
    raise TypeError(f"{name}: expected a JAX or numpy array (or a list), got "
                    f"{type(x).__module__}.{type(x).__name__}{hint}")


def arrays(**named: Any) -> tuple:
    """:func:`array` for each keyword argument, in order: ``xs, ys = arrays(xs=xs, ys=ys)``."""
    return tuple(array(name, value) for name, value in named.items())


def size(name: str, value: Any) -> None:
    """A layer size: a Python int >= 1 (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int >= 1, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")


def key(name: str, value: Any) -> jax.Array:
    """A PRNG key of either kind: a typed key (``jax.random.key``) is returned
    as is; a legacy raw key (``jax.random.PRNGKey``: uint32 of shape (2,)) is
    wrapped into a typed one, so both draw exactly the same numbers. Anything
    else is a TypeError that says which kinds are accepted."""
    if isinstance(value, (jax.Array, jax.core.Tracer)):
        dtype = value.dtype
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            if value.shape != ():
                raise ValueError(f"{name}: expected one key (shape ()), got a key array "
                                 f"of shape {tuple(value.shape)}")
            return value
        if dtype == jnp.uint32 and value.shape == (2,):
            return jax.random.wrap_key_data(value)
        raise TypeError(f"{name}: expected a PRNG key, jax.random.key(seed) or the legacy "
                        f"jax.random.PRNGKey(seed) (uint32 of shape (2,)), got an array of "
                        f"dtype {dtype} and shape {tuple(value.shape)}")
    raise TypeError(f"{name}: expected a PRNG key, jax.random.key(seed) or the legacy "
                    f"jax.random.PRNGKey(seed), got {type(value).__name__} {value!r}")


def boolean(name: str, x: Any) -> None:
    dtype = jnp.result_type(x)
    if dtype != jnp.bool_:
        raise TypeError(
            f"{name}: expected dtype bool, got {dtype}; pass x.astype(bool) "
            "if nonzero means True")


def same_dtype(name: str, x: Any, dtype: Any, owner: str) -> None:
    actual = jnp.result_type(x)
    if actual != dtype:
        raise TypeError(
            f"{name}: expected dtype {jnp.dtype(dtype)} (the dtype of {owner}), "
            f"got {actual}; cast it with .astype({jnp.dtype(dtype).name!r}) so "
            "that nothing is promoted silently")


def rank(name: str, x: Any, ranks: Sequence[int], expected: str) -> None:
    if np.ndim(x) not in ranks:
        fail_shape(name, expected, np.shape(x))


def sequence(name: str, xs: Any, U_shape: Sequence[int], dtype: Any, owner: str) -> None:
    """A layer's input: (T, B, D) or unbatched (T, D), T ≥ 1, B ≥ 1, D = U's columns,
    the parameters' dtype."""
    D = U_shape[-1]
    rank(name, xs, (2, 3), f"(T, B, {D}) or unbatched (T, {D})")
    if xs.shape[-1] != D:
        fail_shape(name, f"(..., {D}): last axis = input size, U is {tuple(U_shape)}", xs.shape)
    if xs.shape[0] == 0:
        fail_shape(name, "(T, ...) with T >= 1", xs.shape)
    if xs.ndim == 3 and xs.shape[1] == 0:
        fail_shape(name, "(T, B, ...) with B >= 1", xs.shape,
                   "an empty batch has no loss to average")
    same_dtype(name, xs, dtype, owner)


def cell_params(cell: Any, params: Any, size: int, dtype: Any, owner: str) -> None:
    """A cell with parameters of its own gets them, shaped as its ``init_params(key,
    size, dtype)`` makes them and of the layer's dtype; a cell without gets None."""
    if cell.init_params is None:
        if params is not None:
            raise ValueError(f"cell_params: cell {cell.name!r} has no parameters of its own, "
                             f"got {type(params).__name__}")
        return
    if params is None:
        raise ValueError(f"cell_params: cell {cell.name!r} needs its own parameters "
                         f"(jrnn.cells.get({cell.name!r}).init_params(key, {size}, dtype)), "
                         f"got None")
    expected = jax.eval_shape(lambda: cell.init_params(jax.random.key(0), size, dtype))
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(f"cell_params: expected the structure {jax.tree.structure(expected)}, "
                         f"got {jax.tree.structure(params)}")
    for (path, leaf), ref in zip(jax.tree_util.tree_leaves_with_path(params),
                                 jax.tree.leaves(expected)):
        name = "cell_params" + jax.tree_util.keystr(path)
        floating(name, leaf)
        shape(name, leaf, ref.shape)
        same_dtype(name, leaf, dtype, owner)


def shape(name: str, x: Any, expected_shape: Sequence[int], expected: str = "",
          hint: str = "") -> None:
    if tuple(np.shape(x)) != tuple(expected_shape):
        fail_shape(name, expected or str(tuple(expected_shape)), np.shape(x), hint)


def backward(value: str) -> None:
    if value not in BACKWARDS:
        raise ValueError(f"backward: expected one of {BACKWARDS}, got {value!r}")


def labels_in_range(name: str, ys: Any, num_classes: int, mask: Any = None) -> None:
    """Checks ``0 <= ys < num_classes`` where unmasked, when the values are concrete.

    Under ``jit`` the values are unknown at trace time; the loss then returns
    NaN for an out-of-range label, which training's NaN check reports.
    """
    if isinstance(ys, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
        if jnp.size(ys):
            inside = (ys >= 0) & (ys < num_classes)
            if mask is not None:
                inside = inside | ~mask
            low, high = jnp.min(ys), jnp.max(ys)
            traced_values(jnp.all(inside), f"{name}: expected class indices in "
                          f"[0, {num_classes}), got values in [{{}}, {{}}]", low, high)
        return
    values = np.asarray(ys)
    if mask is not None:
        values = values[np.asarray(mask)]
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{name}: expected class indices in [0, {num_classes}), got values in "
            f"[{values.min()}, {values.max()}]")


def traced_values(ok: Any, message: str, *values: Any) -> None:
    """A check on traced values (under ``jit`` they are unknown at trace time).

    Without :func:`jrnn.checked` (``jax.experimental.checkify``) the check
    computes nothing in the compiled program; under it, a failing check raises
    ``message.format(*values)`` when the program runs. Its one cost outside
    ``checked``: the effect it records sends every call of the jitted function
    through JAX's Python dispatch instead of the C++ fast path (about 37 µs a
    call against 4 for a trivial function on a 2-core CPU; benchmarks/NOTES.md).
    """
    checkify.debug_check(ok, message, *values)


def checked(fn: Any) -> Any:
    """``fn`` with jrnn's checks on traced values switched on.

    Under ``jax.jit`` the values of ``lengths`` and of labels are unknown
    while jrnn checks its arguments, so they cannot raise there: without this
    wrapper a length above T acts as T, one below 0 as 0, and an out-of-range
    label gives a NaN loss. ``checked(fn)`` runs ``fn`` (jitted or not, its
    gradient too) through ``jax.experimental.checkify`` and raises
    ``ValueError`` with jrnn's message when a check fails::

        grad = jrnn.checked(jax.jit(jax.grad(loss)))
        grad(params, xs, ys, lengths=lengths)   # ValueError: lengths: expected ...

    The checks cost a reduction over the checked arrays per call; the plain
    ``fn`` computes none of them, though its jitted calls take JAX's Python
    dispatch path (about 37 µs a call on a 2-core CPU, against 4 without checks).
    """
    checkified = checkify.checkify(fn, errors=checkify.user_checks)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        error, out = checkified(*args, **kwargs)
        message = error.get()
        if message is not None:
            raise ValueError(message.split(" (`check` failed)")[0].split(" (check failed at")[0])
        return out
    return run


def _forward_mode_tracer(leaf: Any) -> bool:
    t = leaf
    while isinstance(t, jax.core.Tracer):
        if type(t).__name__ == "JVPTracer":
            return True
        t = getattr(t, "primal", getattr(t, "val", None))
    return False


def reject_forward_mode(where: str, *trees: Any) -> None:
    """Fails early, with a pointer to the switch, under jvp / jacfwd / hessian.

    A ``jax.custom_vjp`` has no forward-mode rule; JAX's own error would say
    only that, and under ``jit`` it arrives late, at lowering. Reverse mode
    (grad, vjp, linearize) traces with linearize tracers and passes.
    """
    if not jax.config.jax_use_direct_linearize:
        return  # grad itself would trace with JVP tracers: nothing to tell apart
    if any(_forward_mode_tracer(leaf) for leaf in jax.tree.leaves(trees)):
        raise TypeError(
            f"{where}: forward-mode autodiff (jax.jvp, jax.jacfwd, jax.hessian) "
            "cannot pass through jrnn's hand-written backward, which is a "
            "jax.custom_vjp (reverse mode only). Pass backward='autodiff' to "
            "differentiate the same forward with plain JAX autodiff instead.")
