"""Tests of electra_jax.input_pipeline: shapes, resumable determinism, process sharding, eval batches."""
import collections
import itertools
import random

import numpy as np
import pytest

from electra_jax import build_data
from electra_jax import defaults
from electra_jax import input_pipeline
from electra_jax.errors import UserError

WORDS = 'red green blue cyan magenta yellow black white gray brown pink'.split()
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.'] + WORDS
SEQ = 16
BATCH = 4


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """A tiny build: about a hundred 16-token train examples in 3 shards; returns (config, meta)."""
  tmp_path = tmp_path_factory.mktemp('data')
  rng = random.Random(0)
  docs = ['\n'.join(' '.join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))) + '.'
                    for _ in range(rng.randint(1, 6))) for _ in range(60)]
  (tmp_path / 'corpus.txt').write_text('\n\n'.join(docs) + '\n', encoding='utf-8')
  (tmp_path / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  config = defaults.get_default_config()
  config.seed = 7
  config.batch_size = BATCH
  config.max_seq_length = SEQ
  config.eval_steps = 5
  config.model.vocab_size = len(VOCAB)
  config.data.corpus = str(tmp_path / 'corpus.txt')
  config.data.vocab = str(tmp_path / 'vocab.txt')
  config.data.num_shards = 3
  config.data.num_processes = 1
  config.data.eval_fraction = 0.1
  config.data.shuffle_buffer = 32
  data_dir = build_data.build_pretraining_data(config, str(tmp_path))
  return config, build_data.load_meta(data_dir)


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def rows(batches):
  """Each example of the batches as a hashable tuple of its input_ids."""
  return [tuple(row) for b in batches for row in b['input_ids']]


def all_train_rows(meta):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = []
  for path in meta.train_files:
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
      features = tf.train.Example.FromString(record).features.feature
      result.append(tuple(features['input_ids'].int64_list.value))
  return result


def test_batch_shapes_and_dtypes(data):
  config, meta = data
  batch = next(input_pipeline.train_batches(config, meta))
  assert sorted(batch) == ['input_ids', 'input_mask', 'segment_ids']
  for value in batch.values():
    assert isinstance(value, np.ndarray)
    assert value.shape == (BATCH, SEQ) and value.dtype == np.int32
  assert (batch['input_ids'][:, 0] == meta.cls_id).all()
  assert ((batch['input_ids'] != 0) == (batch['input_mask'] == 1)).all()


def test_each_epoch_reads_every_example_once(data):
  config, meta = data
  num_records = meta.num_train_examples
  assert num_records > 3 * BATCH  # the checks below then cross epoch boundaries
  batches = take(input_pipeline.train_batches(config, meta), 2 * num_records // BATCH + 1)
  stream = rows(batches)
  expected = collections.Counter(all_train_rows(meta))
  assert collections.Counter(stream[:num_records]) == expected
  assert collections.Counter(stream[num_records:2 * num_records]) == expected
  assert stream[:num_records] != stream[num_records:2 * num_records]  # reshuffled per epoch


def test_resumed_batches_equal_uninterrupted_ones(data):
  config, meta = data
  steps_per_epoch = meta.num_train_examples / BATCH
  total = int(2.5 * steps_per_epoch)
  uninterrupted = take(input_pipeline.train_batches(config, meta), total)
  again = take(input_pipeline.train_batches(config, meta), total)
  assert rows(again) == rows(uninterrupted)
  # Resume inside the first epoch, just before the epoch boundary and in the second epoch.
  for start in (3, int(steps_per_epoch) - 1, int(steps_per_epoch) + 2):
    resumed = take(input_pipeline.train_batches(config, meta, start_step=start), 4)
    for got, want in zip(resumed, uninterrupted[start:start + 4]):
      for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_other_seed_gives_other_order(data):
  config, meta = data
  other = config.copy_and_resolve_references()
  other.seed = config.seed + 1
  assert rows(take(input_pipeline.train_batches(other, meta), 3)) != rows(
      take(input_pipeline.train_batches(config, meta), 3))


@pytest.mark.parametrize('process_count', [2, 4])  # 4 > 3 files: records are split instead of files
def test_processes_split_each_epoch_between_them(data, process_count):
  config, meta = data
  local_batch = BATCH // process_count
  together = collections.Counter()
  for index in range(process_count):
    batches = input_pipeline.train_batches(
        config, meta, process_index=index, process_count=process_count)
    _, _, num_records = input_pipeline._local_files(  # pylint: disable=protected-access
        meta.train_files, meta.train_examples_per_file, index, process_count)
    epoch = take(batches, -(-num_records // local_batch))
    assert epoch[0]['input_ids'].shape == (local_batch, SEQ)
    together.update(rows(epoch)[:num_records])
  # Each process read its share once; together they read every example once.
  assert together == collections.Counter(all_train_rows(meta))


def test_eval_batches_are_the_same_every_call(data):
  config, meta = data
  first = list(input_pipeline.eval_batches(config, meta))
  second = list(input_pipeline.eval_batches(config, meta))
  assert len(first) == config.eval_steps
  assert meta.num_eval_examples < config.eval_steps * BATCH  # so the eval files were repeated
  for a, b in zip(first, second):
    for name in a:
      assert a[name].shape == (BATCH, SEQ) and a[name].dtype == np.int32
      np.testing.assert_array_equal(a[name], b[name])


def test_batch_size_not_divisible_by_processes(data):
  config, meta = data
  with pytest.raises(UserError, match='batch_size 4 is not divisible by the number of processes 3'):
    input_pipeline.train_batches(config, meta, process_index=0, process_count=3)


def test_sequence_length_mismatch(data):
  config, meta = data
  other = config.copy_and_resolve_references()
  other.max_seq_length = 32
  with pytest.raises(UserError, match='--config.max_seq_length=16'):
    input_pipeline.eval_batches(other, meta)
