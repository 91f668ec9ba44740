"""One builder worker's job: a text shard (sentences, blank-line documents) -> a TFRecord shard.

Runs in a worker process (build_data.py starts them with 'spawn': TensorFlow and fork don't mix), so
everything it needs travels in a `ShardTask` and TensorFlow is imported only here, when a shard is made.
"""
import dataclasses
import functools
import os
import random

from electra_jax import corpus
from electra_jax import packing
from electra_jax import paths
from electra_jax import tokenization

# Sentences tokenized per call: large enough for the Rust tokenizer's batching, small in memory.
_TOKENIZE_BATCH = 256


@dataclasses.dataclass(frozen=True)
class ShardTask:
  text_path: str  # input: one sentence per line, a blank line after each document
  output_path: str  # the TFRecord file to write
  vocab_path: str
  do_lower_case: bool
  max_seq_length: int
  rng_seed: str  # seeds the packing draws of this shard alone, so shards don't depend on each other


@functools.lru_cache(maxsize=2)
def _tokenizer(vocab_path: str, do_lower_case: bool) -> tokenization.Tokenizer:
  return tokenization.load_tokenizer(vocab_path, do_lower_case)


def _documents(text_path: str):
  """Yields the documents of a text shard, each a list of sentences."""
  with paths.open(text_path, encoding='utf-8') as f:
    yield from corpus.split_documents(line.strip() for line in f)


def _examples(task: ShardTask):
  """Yields the packed examples of a shard, as dicts of int lists."""
  tokenizer = _tokenizer(task.vocab_path, task.do_lower_case)
  builder = packing.ExampleBuilder(
      cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id,
      max_length=task.max_seq_length, rng=random.Random(task.rng_seed))
  for document in _documents(task.text_path):
    for start in range(0, len(document), _TOKENIZE_BATCH):
      for token_ids in tokenizer.encode_batch(document[start:start + _TOKENIZE_BATCH]):
        example = builder.add_sentence(token_ids)
        if example:
          yield example
    example = builder.end_document()
    if example:
      yield example


def write_shard(task: ShardTask) -> int:
  """Writes the examples of `task.text_path` to `task.output_path`; returns how many."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (workers only; slow to import)

  def int64_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

  tmp_path = task.output_path + '.tmp'
  count = 0
  with tf.io.TFRecordWriter(tmp_path) as writer:
    for example in _examples(task):
      features = tf.train.Features(feature={k: int64_feature(v) for k, v in example.items()})
      # Deterministic: feature maps otherwise serialize in an order that varies between processes.
      writer.write(tf.train.Example(features=features).SerializeToString(deterministic=True))
      count += 1
  paths.replace(tmp_path, task.output_path)
  return count
