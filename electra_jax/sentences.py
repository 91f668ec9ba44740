"""Turns running text into one-sentence-per-line form, the layout the pre-training builder expects."""
import re

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) when whitespace and
# something that can start a sentence follow. Simple on purpose: the builder packs consecutive sentences
# anyway, so a missed or a spurious split only moves the boundary between two segments.
_SENTENCE_END = re.compile(r'(?:(?<=[.!?])|(?<=[.!?]["\')\]]))\s+(?=["\'(\[]?[A-Z0-9])')
_WHITESPACE = re.compile(r'\s+')
_LETTER = re.compile(r'[^\W\d_]')


def collapse_whitespace(text: str) -> str:
  return _WHITESPACE.sub(' ', text).strip()


def split_sentences(text: str) -> list[str]:
  """Splits `text` into sentences with whitespace collapsed; sentences without a letter are dropped."""
  sentences = []
  for sentence in _SENTENCE_END.split(collapse_whitespace(text)):
    sentence = sentence.strip()
    if _LETTER.search(sentence):
      sentences.append(sentence)
  return sentences
