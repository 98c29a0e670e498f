"""The benchmark programs, importable so that ``jrnn bench`` runs them from an installed package.

* :mod:`jrnn.bench.suite`: jrnn beside autodiff, Flax and PyTorch (``jrnn bench``,
  or ``python benchmarks/suite.py``);
* :mod:`jrnn.bench.remat_curve`: memory against time for memory-bounded BPTT
  (``jrnn bench --remat``, or ``python benchmarks/remat_curve.py``);
* :mod:`jrnn.bench.precision`: float32 against bfloat16, speed and gradient error
  (``jrnn bench --precision``, or ``python benchmarks/precision.py``).

Results and the method notes live in the repository's ``benchmarks/`` folder.
"""
