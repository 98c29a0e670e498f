"""The classic RNN architectures (Deep Learning §10.2–10.5), composed from hand-differentiated layers.

* :mod:`~jrnn.models.tagger`: many-to-many with T_x = T_y; deep, bidirectional,
  deep bidirectional.
* :mod:`~jrnn.models.classifier`: many-to-one, on the last valid state.
* :mod:`~jrnn.models.generator`: one-to-many, outputs fed back as inputs.
* :mod:`~jrnn.models.seq2seq`: many-to-many with T_x ≠ T_y, encoder-decoder.

Every architecture takes any registered cell and the layer options (lengths,
masks, restarts where they apply, learned initial states) and runs entirely
on the hand-written backward; ``backward="autodiff"`` switches all of it.
"""
from jrnn.models import classifier, generator, seq2seq, tagger

__all__ = ["classifier", "generator", "seq2seq", "tagger"]
