"""Batches of pre-training examples from the shards of build_data.py, deterministic and resumable.

Training data is an endless stream of records made of epochs. Epoch e reads this process's files in an
order permuted with (config.seed, e), interleaved deterministically, and shuffled with a buffer whose
seed also comes from (config.seed, e); epochs follow each other and batches run across their boundaries.
So the record at position r of the stream, and the batch at step N (records N*B .. N*B+B-1, B the
per-process batch), depend only on the seed and the data: a run resumed at step N starts at epoch
N*B // R (R records per epoch in this process), skips N*B % R records (at most one epoch's reading),
and then sees exactly the batches an uninterrupted run saw.

Each process reads files[process_index::process_count]; with fewer files than processes every process
reads all files and keeps every process_count-th record.
TensorFlow here is for reading only: it is hidden from GPUs and TPUs, which belong to JAX.
"""
import os
import re
from typing import TYPE_CHECKING

from electra_jax import errors
from electra_jax.errors import UserError

if TYPE_CHECKING:
  from electra_jax import build_data  # pylint: disable=g-import-not-at-top

FEATURES = ('input_ids', 'input_mask', 'segment_ids')
# Files read at once by the interleave; more only helps mixing when the shuffle buffer is small.
_INTERLEAVE_CYCLE = 16
# Epoch numbers are never this large; it stands for "forever".
_MAX_EPOCHS = 2**62


def _import_tf_for_input():
  """Imports TensorFlow and keeps it off accelerators (must happen before TF initializes devices)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow; input pipelines only)
  for device_type in ('GPU', 'TPU'):
    try:
      tf.config.set_visible_devices([], device_type)
    except (RuntimeError, ValueError):
      pass  # TF already initialized (then an earlier call hid them) or knows no such device type
  return tf


def _local_batch_size(config, process_index: int, process_count: int) -> int:
  if not 0 <= process_index < process_count:
    raise UserError(f'process_index {process_index} is not in [0, {process_count})')
  errors.check_divisible('batch_size', config.batch_size, process_count,
                         f'the number of processes {process_count}')
  return config.batch_size // process_count


def _check_meta(config, meta):
  if config.max_seq_length != meta.max_seq_length:
    raise UserError(
        f'the data in {meta.data_dir} has max_seq_length {meta.max_seq_length} but the '
        f'config has {config.max_seq_length}; rebuild the data or set '
        f'--config.max_seq_length={meta.max_seq_length}')


def _local_files(files: list[str], counts: dict, process_index: int, process_count: int):
  """Returns (files this process reads, whether to keep every process_count-th record, records)."""
  if len(files) >= process_count:
    local = files[process_index::process_count]
    return local, False, sum(counts[f] for f in local)
  total = sum(counts[f] for f in files)
  return files, True, len(range(process_index, total, process_count))


def _parse_batch(tf, max_seq_length: int):
  spec = {name: tf.io.FixedLenFeature([max_seq_length], tf.int64) for name in FEATURES}

  def parse(serialized):
    parsed = tf.io.parse_example(serialized, spec)
    return {name: tf.cast(parsed[name], tf.int32) for name in FEATURES}

  return parse


def _deterministic(tf, dataset):
  options = tf.data.Options()
  options.deterministic = True
  return dataset.with_options(options)


def _naming_damaged_files(tf, iterator, files, max_seq_length):
  """`iterator`, with a damaged record told as a UserError naming its file.

  tf.data's error names no file (shards are read interleaved), so only after one, each of `files`
  is read through on its own to find it.
  """
  def first_line(error):  # without TF's '{{function_node ...}}' and '[Op:...]' decorations
    text = (error.message or str(error)).strip().splitlines()[0]
    return re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:.*$', '', text)

  try:
    yield from iterator
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    reason = first_line(e)
    parse = _parse_batch(tf, max_seq_length)
    for path in files:
      try:
        for _ in tf.data.TFRecordDataset(path).batch(256).map(parse):
          pass
      except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as file_error:
        reason = first_line(file_error)
        raise UserError(f'pre-training shard {path} is damaged ({reason}); rebuild the data '
                        f'(delete meta.json in its folder, then rerun)') from None
    raise UserError(f'cannot read the pre-training shards ({reason})') from None


def train_batches(config, meta: 'build_data.DataMeta', start_step: int = 0,
                  process_index: int = 0, process_count: int = 1):
  """Endless iterator of training batches, from step `start_step` on.

  Yields dicts of int32 numpy arrays `input_ids`, `input_mask`, `segment_ids`, each of shape
  [config.batch_size // process_count, max_seq_length]. `meta` comes from build_data.load_meta.
  """
  tf = _import_tf_for_input()
  _check_meta(config, meta)
  batch = _local_batch_size(config, process_index, process_count)
  files, by_record, num_records = _local_files(
      meta.train_files, meta.train_examples_per_file, process_index, process_count)
  if num_records == 0:
    raise UserError(f'process {process_index} of {process_count} has no training examples in '
                    f'{meta.data_dir}; build more data or fewer shards')

  first_record = start_step * batch
  start_epoch, skip = divmod(first_record, num_records)
  files_tensor = tf.constant(files)
  seed = int(config.seed)
  shuffle_buffer = int(config.data.shuffle_buffer)

  def epoch_records(epoch):
    # Two stateless seeds per epoch: one orders the files, one seeds the shuffle buffer.
    order_seed = tf.stack([tf.constant(seed, tf.int64), 2 * epoch])
    shuffle_seed = tf.stack([tf.constant(seed, tf.int64), 2 * epoch + 1])
    # The file order is the same on every process (needed when they split records of shared files).
    order = tf.argsort(tf.random.stateless_uniform([len(files)], seed=order_seed))
    records = tf.data.Dataset.from_tensor_slices(tf.gather(files_tensor, order)).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), _INTERLEAVE_CYCLE), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if by_record:
      records = records.shard(process_count, process_index)
    buffer_seed = tf.random.stateless_uniform(
        [], seed=shuffle_seed, minval=0, maxval=2**31 - 1, dtype=tf.int64) + process_index
    return records.shuffle(shuffle_buffer, seed=buffer_seed, reshuffle_each_iteration=False)

  dataset = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(epoch_records)
  dataset = dataset.skip(skip).batch(batch, drop_remainder=True)
  dataset = dataset.map(_parse_batch(tf, meta.max_seq_length), num_parallel_calls=tf.data.AUTOTUNE)
  return _naming_damaged_files(tf, _deterministic(tf, dataset.prefetch(2)).as_numpy_iterator(),
                               files, meta.max_seq_length)


def eval_batches(config, meta: 'build_data.DataMeta', process_index: int = 0,
                 process_count: int = 1):
  """Iterator of the `config.eval_steps` eval batches; every call gives the same batches.

  The eval files are read in order and repeated if they hold fewer examples than the batches need.
  """
  tf = _import_tf_for_input()
  _check_meta(config, meta)
  batch = _local_batch_size(config, process_index, process_count)
  files, by_record, num_records = _local_files(
      meta.eval_files, meta.eval_examples_per_file, process_index, process_count)
  if num_records == 0:
    raise UserError(f'process {process_index} of {process_count} has no eval examples in '
                    f'{meta.data_dir}; build with a larger eval_fraction')
  dataset = tf.data.TFRecordDataset(files)
  if by_record:
    dataset = dataset.shard(process_count, process_index)
  dataset = dataset.repeat().batch(batch, drop_remainder=True).take(config.eval_steps)
  dataset = dataset.map(_parse_batch(tf, meta.max_seq_length))
  return _naming_damaged_files(tf, _deterministic(tf, dataset).as_numpy_iterator(), files,
                               meta.max_seq_length)

