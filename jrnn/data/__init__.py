"""Corpora and tasks that need no download."""
from jrnn.data.tasks import DIGIT_VOCAB, adding_problem, digit_strings, load_digits
from jrnn.data.text import CharVocab, stdlib_source, streams, unigram_entropy

__all__ = ["CharVocab", "DIGIT_VOCAB", "adding_problem", "digit_strings", "load_digits",
           "stdlib_source", "streams", "unigram_entropy"]
