"""The hand-written backward really runs: its rules are called, autodiff's are not."""
import jax
import jax.extend
import pytest

import jrnn
from jrnn import heads, recurrence
from helpers import elman_problem


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of the two hand-written VJP rules (layer and head)."""
    counts = {"layer": 0, "head": 0}
    for key, fn in (("layer", recurrence._rnn_manual), ("head", heads._softmax_nll_manual)):
        original = fn.bwd

        def counting(*args, _original=original, _key=key):
            counts[_key] += 1
            return _original(*args)
        monkeypatch.setattr(fn, "bwd", counting)
    return counts


def test_grad_runs_the_hand_written_rules(calls):
    p, xs, ys, h0 = elman_problem(0)
    jax.grad(jrnn.elman.loss)(p, xs, ys, h0)
    assert calls == {"layer": 1, "head": 1}


def test_grad_under_jit_traces_the_hand_written_rules(calls):
    p, xs, ys, h0 = elman_problem(0, T=3)
    jax.jit(jax.grad(lambda p: jrnn.elman.loss(p, xs, ys, h0)))(p)
    assert calls == {"layer": 1, "head": 1}


def test_autodiff_switch_bypasses_them(calls):
    p, xs, ys, h0 = elman_problem(0)
    jax.grad(jrnn.elman.loss)(p, xs, ys, h0, backward="autodiff")
    assert calls == {"layer": 0, "head": 0}


def test_backward_scan_holds_no_per_step_weight_gradient():
    """dW is one matmul after the reverse scan: no (G·H, H) array is carried by it."""
    p, xs, ys, h0 = elman_problem(0, T=5, B=3, D=4, H=6, C=3)
    jaxpr = jax.make_jaxpr(jax.grad(jrnn.elman.loss))(p, xs, ys, h0)

    def scans(eqns):
        for eqn in eqns:
            if eqn.primitive.name == "scan":
                yield eqn
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from scans(sub.eqns)
    found = list(scans(jaxpr.jaxpr.eqns))
    assert len(found) == 2  # the forward scan and the reverse (BPTT) scan
    # What a scan body returns is its carry and its per-step outputs: neither may be a
    # (G·H, H) array. (Read from the body itself: the scan's parameter names change
    # between JAX versions, e.g. JAX 0.11 has no "num_consts".)
    for eqn in found:
        for body in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes = [v.aval.shape for v in body.outvars]
            assert p.W.shape not in shapes, shapes
