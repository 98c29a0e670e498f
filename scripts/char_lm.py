"""Character-level language model, trained with jrnn's hand-written BPTT: ``jrnn train``.

The recipe of Karpathy's min-char-rnn (2015) at a useful scale: a recurrent
network (the textbook tanh RNN by default; ``--cell lstm`` or ``gru``, and
``--layers``) reads one-hot characters and predicts the next one; a long text
is cut into ``--batch`` parallel streams and trained by truncated BPTT in
chunks of ``--seq`` characters, the hidden state carried from chunk to chunk.

With no ``--text`` it trains on about 2 MB of the Python standard library's
own source (no download). It prints the validation loss beside the unigram
entropy of the same text (the loss of a model that ignores context) and a
sample. The defaults finish in about two to three minutes on a 2-core CPU.
Every option of ``jrnn train`` works here (``--checkpoint-dir``, ``--resume``...).

    python scripts/char_lm.py                   # default corpus
    python scripts/char_lm.py --text book.txt --steps 5000 --hidden 512
    python scripts/char_lm.py --cell lstm --hidden 256 --checkpoint-dir runs/lstm
"""
from __future__ import annotations

import sys

from jrnn import cli


def main(argv=None) -> int:
    return cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
