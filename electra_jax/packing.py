"""Packs tokenized sentences into pre-training examples, by the rules of the original ELECTRA builder.

ELECTRA's build_pretraining_dataset.py (ExampleBuilder.add_line / _create_example), rule for rule:
- Consecutive sentences of one document are collected until they reach the target length; then, or at
  the end of the document, they become one example. Examples never span two documents.
- 10% of examples are a single segment; the others aim the first segment at (target - 3) // 2 tokens.
- A sentence joins the first segment if the first segment is empty, or if it still fits, or (with
  probability 0.5) if it would overflow a first segment that is still short while the second is empty.
- The segments are cut to fit [CLS] A [SEP] B [SEP] into max_length; a second segment cut to nothing
  is left out, giving [CLS] A [SEP].
- After each example, with probability 0.05 the next target length is uniform in [5, max_length].
The original draws from Python's global `random`; here the draws come from the `rng` passed in, in the
same order, so a seeded builder is reproducible.
"""
import random

SINGLE_SEGMENT_PROB = 0.1
SHORT_TARGET_PROB = 0.05
MIN_SHORT_TARGET = 5
# First-segment target of a single-segment example: larger than any sequence.
_NO_SECOND_SEGMENT = 100_000


class ExampleBuilder:
  """Turns a stream of tokenized sentences into fixed-length examples.

  Usage: `add_sentence(ids)` for each sentence of a document and `end_document()` after it; each returns
  an example (a dict of `input_ids`, `input_mask`, `segment_ids`, lists of `max_length` ints) or None.
  """

  def __init__(self, cls_id: int, sep_id: int, max_length: int, rng: random.Random, pad_id: int = 0):
    if max_length < MIN_SHORT_TARGET:
      raise ValueError(f'max_length must be at least {MIN_SHORT_TARGET}, got {max_length}')
    self._cls_id = cls_id
    self._sep_id = sep_id
    self._pad_id = pad_id
    self._max_length = max_length
    self._rng = rng
    self._sentences = []
    self._length = 0
    self.target_length = max_length

  def add_sentence(self, token_ids: list[int]):
    """Adds one sentence; returns an example once the target length is reached, else None."""
    if not token_ids:
      return None  # the original appends it, but an empty sentence changes neither tokens nor draws
    self._sentences.append(list(token_ids))
    self._length += len(token_ids)
    if self._length >= self.target_length:
      return self._create_example()
    return None

  def end_document(self):
    """Ends the current document; returns the example of its pending sentences, if any."""
    if self._length:
      return self._create_example()
    return None

  def _create_example(self):
    if self._rng.random() < SINGLE_SEGMENT_PROB:
      first_target = _NO_SECOND_SEGMENT
    else:
      first_target = (self.target_length - 3) // 2  # 3 = [CLS] and two [SEP], not yet added

    first, second = [], []
    for sentence in self._sentences:
      if (not first or len(first) + len(sentence) < first_target or
          (not second and len(first) < first_target and self._rng.random() < 0.5)):
        first += sentence
      else:
        second += sentence

    first = first[:self._max_length - 2]
    second = second[:max(0, self._max_length - len(first) - 3)]

    self._sentences = []
    self._length = 0
    if self._rng.random() < SHORT_TARGET_PROB:
      self.target_length = self._rng.randint(MIN_SHORT_TARGET, self._max_length)
    else:
      self.target_length = self._max_length
    return self._make_example(first, second)

  def _make_example(self, first: list[int], second: list[int]) -> dict[str, list[int]]:
    input_ids = [self._cls_id] + first + [self._sep_id]
    segment_ids = [0] * len(input_ids)
    if second:
      input_ids += second + [self._sep_id]
      segment_ids += [1] * (len(second) + 1)
    padding = self._max_length - len(input_ids)
    return {
        'input_ids': input_ids + [self._pad_id] * padding,
        'input_mask': [1] * len(input_ids) + [0] * padding,
        'segment_ids': segment_ids + [0] * padding,
    }
