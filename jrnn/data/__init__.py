"""Corpora and tasks that need no download."""
from jrnn.data.text import CharVocab, stdlib_source, streams, unigram_entropy

__all__ = ["CharVocab", "stdlib_source", "streams", "unigram_entropy"]
