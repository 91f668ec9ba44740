"""Tests of the pre-training data builder: packing rules, shards, meta.json, reuse and bad input."""
import dataclasses
import json
import os
import random
import subprocess
import sys

import pytest

from electra_jax import build_data
from electra_jax import corpus as corpus_lib
from electra_jax import defaults
from electra_jax import demo_corpus
from electra_jax import packing
from electra_jax import tokenization
from electra_jax.errors import UserError

CLS, SEP = 101, 102
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ScriptedRng:
  """Stands in for random.Random, giving the draws a test scripted, and checking that all are used."""

  def __init__(self, draws, max_length=None):
    self._draws = list(draws)
    self._max_length = max_length

  def random(self):
    return self._draws.pop(0)

  def randint(self, low, high):
    assert (low, high) == (5, self._max_length)
    return self._draws.pop(0)

  def exhausted(self):
    return not self._draws


def feed(builder, sentences):
  """Adds the sentences in turn; returns the examples they completed."""
  return [e for e in (builder.add_sentence(s) for s in sentences) if e]


# ---- Packing rules, on token ids (the builder never sees text), with scripted draws.


def test_two_segments_second_cut_to_fit():
  # Draws: not single-segment (0.5); the overflowing 2nd sentence goes to B (coin 0.7); full target.
  rng = ScriptedRng([0.5, 0.7, 0.9])
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  sentences = [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17]]
  [example] = feed(builder, sentences)  # 17 tokens >= target 16 completes the example
  # First-segment target (16 - 3) // 2 = 6: [4, 5, 6] would make it 6, not < 6. B cut to 16 - 3 - 3.
  assert example['input_ids'] == [CLS, 1, 2, 3, SEP, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, SEP]
  assert example['segment_ids'] == [0] * 5 + [1] * 11
  assert example['input_mask'] == [1] * 16
  assert rng.exhausted() and builder.target_length == 16


def test_coin_puts_overflowing_sentence_in_first_segment():
  rng = ScriptedRng([0.5, 0.3, 0.9])  # coin 0.3 < 0.5: [4, 5, 6] joins A although it reaches 6
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  [example] = feed(builder, [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17]])
  # A is now at its target, so the rest goes to B without a coin; B cut to 16 - 6 - 3 = 7.
  assert example['input_ids'] == [CLS, 1, 2, 3, 4, 5, 6, SEP, 7, 8, 9, 10, 11, 12, 13, SEP]
  assert example['segment_ids'] == [0] * 8 + [1] * 8
  assert rng.exhausted()


def test_single_segment_at_document_end_is_padded():
  rng = ScriptedRng([0.05, 0.9])  # 0.05 < 0.1: single segment, no coin draws
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  assert feed(builder, [[1, 2, 3], [4, 5]]) == []
  example = builder.end_document()
  assert example == {
      'input_ids': [CLS, 1, 2, 3, 4, 5, SEP] + [0] * 9,
      'input_mask': [1] * 7 + [0] * 9,
      'segment_ids': [0] * 16,
  }
  assert builder.end_document() is None and builder.add_sentence([]) is None
  assert rng.exhausted()


def test_single_segment_is_cut_to_max_length_minus_two():
  rng = ScriptedRng([0.0, 0.9])
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  [example] = feed(builder, [list(range(1, 11)), list(range(11, 21))])
  assert example['input_ids'] == [CLS] + list(range(1, 15)) + [SEP]
  assert example['segment_ids'] == [0] * 16
  assert rng.exhausted()


def test_second_segment_cut_to_nothing_is_left_out():
  rng = ScriptedRng([0.5, 0.9])  # A = 15 tokens is over its target: [16, 17] goes to B, no coin
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  [example] = feed(builder, [list(range(1, 16)), [16, 17]])
  assert example['input_ids'] == [CLS] + list(range(1, 15)) + [SEP]  # B cut to 16 - 14 - 3 < 0
  assert example['segment_ids'] == [0] * 16
  assert rng.exhausted()


def test_short_target_length():
  # First example: draw 0.01 < 0.05 sets the next target to randint(5, 16) = 7.
  rng = ScriptedRng([0.05, 0.01, 7, 0.5, 0.9], max_length=16)
  builder = packing.ExampleBuilder(CLS, SEP, max_length=16, rng=rng)
  feed(builder, [[1]])
  builder.end_document()
  assert builder.target_length == 7
  # Target 7: the example is complete at 7 tokens; A aims at (7 - 3) // 2 = 2 tokens.
  [example] = feed(builder, [[1, 2, 3], [4, 5, 6, 7]])
  assert example['input_ids'] == [CLS, 1, 2, 3, SEP, 4, 5, 6, 7, SEP] + [0] * 6
  assert example['segment_ids'] == [0] * 5 + [1] * 5 + [0] * 6
  assert example['input_mask'] == [1] * 10 + [0] * 6
  assert rng.exhausted() and builder.target_length == 16


def check_layout(example, max_length):
  ids, mask, segments = example['input_ids'], example['input_mask'], example['segment_ids']
  assert len(ids) == len(mask) == len(segments) == max_length
  length = sum(mask)
  assert mask == [1] * length + [0] * (max_length - length)
  assert ids[length:] == [0] * (max_length - length) and segments[length:] == [0] * (max_length - length)
  assert ids[0] == CLS and ids[length - 1] == SEP
  seps = [i for i, t in enumerate(ids[:length]) if t == SEP]
  assert len(seps) in (1, 2)
  assert segments[:seps[0] + 1] == [0] * (seps[0] + 1)
  assert segments[seps[0] + 1:length] == [1] * (length - seps[0] - 1)
  return len(seps) == 1


def test_single_segment_and_short_target_frequencies():
  rng = random.Random(1)
  max_length = 128
  builder = packing.ExampleBuilder(CLS, SEP, max_length=max_length, rng=rng)
  single_at_full_target, full_target_examples, short_targets, examples = 0, 0, 0, 0
  while examples < 20_000:
    target = builder.target_length
    example = builder.add_sentence([rng.randint(1, 100) for _ in range(rng.randint(1, 30))])
    if not example:
      continue
    examples += 1
    single = check_layout(example, max_length)
    if target == max_length:  # then only the 10% draw makes a single segment
      full_target_examples += 1
      single_at_full_target += single
    short_targets += builder.target_length < max_length
  assert 0.09 < single_at_full_target / full_target_examples < 0.11
  assert 0.04 < short_targets / examples < 0.06  # 5%, less the randint draws of exactly max_length


# ---- End to end on a tiny corpus with a WordPiece vocabulary made here.

WORDS = ('alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho '
         'sigma tau upsilon phi chi psi omega').split()
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.'] + WORDS


def write_corpus(path, num_docs=40, seed=0):
  rng = random.Random(seed)
  docs = []
  for _ in range(num_docs):
    docs.append('\n'.join(' '.join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) + '.'
                          for _ in range(rng.randint(2, 12))))
  path.write_text('\n\n'.join(docs) + '\n', encoding='utf-8')
  return str(path)


def make_config(tmp_path, **data_overrides):
  vocab = tmp_path / 'vocab.txt'
  if not vocab.exists():
    vocab.write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  corpus = tmp_path / 'corpus.txt'
  if not corpus.exists():
    write_corpus(corpus)
  config = defaults.get_default_config()
  config.max_seq_length = 32
  config.model.vocab_size = len(VOCAB)
  config.data.corpus = str(corpus)
  config.data.vocab = str(vocab)
  config.data.data_dir = str(tmp_path / 'data')
  config.data.num_shards = 3
  config.data.num_processes = 1
  config.data.eval_fraction = 0.1
  for key, value in data_overrides.items():
    setattr(config.data, key, value)
  return config


def read_shard(path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  examples = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    features = tf.train.Example.FromString(record).features.feature
    examples.append({name: list(features[name].int64_list.value) for name in features})
  return examples


def shard_bytes(data_dir):
  return {n: open(os.path.join(data_dir, n), 'rb').read()
          for n in sorted(os.listdir(data_dir)) if n.endswith('.tfrecord')}


def test_build_with_two_processes(tmp_path):
  config = make_config(tmp_path, num_processes=2)
  data_dir = build_data.build_pretraining_data(config, str(tmp_path / 'work'))
  assert data_dir == str(tmp_path / 'data')
  with open(os.path.join(data_dir, 'meta.json')) as f:
    raw_meta = json.load(f)
  assert raw_meta['train_files'] == [f'train-{i:05d}-of-00003.tfrecord' for i in range(3)]
  assert raw_meta['eval_files'] == ['eval-00000-of-00001.tfrecord']
  meta = build_data.load_meta(data_dir)
  assert (meta.vocab_kind, meta.vocab_size, meta.max_seq_length) == ('wordpiece', 30, 32)
  assert (meta.pad_id, meta.unk_id, meta.cls_id, meta.sep_id, meta.mask_id) == (
      0, 1, 2, 3, 4)
  assert meta.num_train_examples > 0 and meta.num_eval_examples > 0
  assert meta.builder_seed == config.data.builder_seed and meta.do_lower_case
  assert meta.vocab_path == config.data.vocab

  for split in ('train', 'eval'):
    total = 0
    for path in getattr(meta, f'{split}_files'):
      examples = read_shard(path)
      assert len(examples) == getattr(meta, f'{split}_examples_per_file')[path]
      total += len(examples)
      for example in examples:
        assert sorted(example) == ['input_ids', 'input_mask', 'segment_ids']
        assert all(len(v) == 32 for v in example.values())
        assert example['input_ids'][0] == meta.cls_id
        assert example['input_ids'][sum(example['input_mask']) - 1] == meta.sep_id
    assert total == getattr(meta, f'num_{split}_examples')

  # The output does not depend on the number of processes.
  one_process = make_config(tmp_path, num_processes=1, data_dir=str(tmp_path / 'data1'))
  assert shard_bytes(build_data.build_pretraining_data(one_process, '')) == shard_bytes(data_dir)


def test_rebuild_reuses_complete_data_and_rebuilds_on_change(tmp_path, caplog):
  config = make_config(tmp_path, data_dir='')  # the workdir's own data dir: WORKDIR/data
  data_dir = build_data.build_pretraining_data(config, str(tmp_path / 'work'))
  meta_path = os.path.join(data_dir, 'meta.json')
  stamp = os.stat(meta_path).st_mtime_ns
  build_data.build_pretraining_data(config, str(tmp_path / 'work'))
  assert os.stat(meta_path).st_mtime_ns == stamp  # reused

  config.data.builder_seed += 1
  with caplog.at_level('WARNING'):
    build_data.build_pretraining_data(config, str(tmp_path / 'work'))
  assert build_data.load_meta(data_dir).builder_seed == config.data.builder_seed
  assert f'Rebuilding the pre-training data in {data_dir}: its settings changed (builder_seed ' \
         f'12345 -> 12346)' in caplog.text


def test_a_data_dir_the_user_named_is_never_rebuilt(tmp_path):
  """It may be shared by other runs: other settings are an error, and the data stays as it was."""
  config = make_config(tmp_path)
  data_dir = build_data.build_pretraining_data(config, '')
  before = shard_bytes(data_dir)
  meta = open(os.path.join(data_dir, 'meta.json')).read()
  config.max_seq_length = 64
  message = error_message(config)
  assert message == (f'data.data_dir {data_dir} holds data built with other settings '
                     '(max_seq_length 32 -> 64); use another data.data_dir, or delete its meta.json '
                     'to rebuild it there')
  assert shard_bytes(data_dir) == before and open(os.path.join(data_dir, 'meta.json')).read() == meta


def test_killed_build_is_not_reused(tmp_path):
  config = make_config(tmp_path)
  data_dir = build_data.build_pretraining_data(config, '')
  complete = shard_bytes(data_dir)
  # A killed build: meta.json not yet written, and a shard of another layout left behind.
  os.remove(os.path.join(data_dir, 'meta.json'))
  stale = os.path.join(data_dir, 'train-00007-of-00009.tfrecord')
  with open(stale, 'wb') as f:
    f.write(b'partial')
  with pytest.raises(UserError, match='has no complete pre-training data'):
    build_data.load_meta(data_dir)
  build_data.build_pretraining_data(config, '')
  assert not os.path.exists(stale)
  assert shard_bytes(data_dir) == complete
  build_data.load_meta(data_dir)


def test_text_shard_buffer_flushes_do_not_change_the_output(tmp_path, monkeypatch):
  data_dir = build_data.build_pretraining_data(make_config(tmp_path), '')
  monkeypatch.setattr(build_data._BufferedFiles, '_FLUSH_BYTES', 100)  # pylint: disable=protected-access
  flushed = make_config(tmp_path, data_dir=str(tmp_path / 'flushed'))
  assert shard_bytes(build_data.build_pretraining_data(flushed, '')) == shard_bytes(data_dir)


def test_load_meta_of_empty_dir(tmp_path):
  with pytest.raises(UserError, match=r'no complete pre-training data \(meta.json\); run build_data'):
    build_data.load_meta(str(tmp_path))


def test_load_meta_is_a_frozen_data_meta_and_reads_older_meta_json(tmp_path):
  data_dir = build_data.build_pretraining_data(make_config(tmp_path), '')
  meta = build_data.load_meta(data_dir)
  assert isinstance(meta, build_data.DataMeta) and meta.data_dir == data_dir
  with pytest.raises(dataclasses.FrozenInstanceError):
    meta.vocab_size = 99
  assert meta.special_ids() == (0, 2, 3, 4)  # objective.SpecialIds: pad, cls, sep, mask
  assert meta.vocab_info() == {
      'vocab_path': meta.vocab_path, 'vocab_kind': 'wordpiece', 'vocab_size': len(VOCAB),
      'do_lower_case': True, 'pad_id': 0, 'unk_id': 1, 'cls_id': 2, 'sep_id': 3, 'mask_id': 4}
  # The same entry as convert writes for that vocabulary file.
  assert meta.vocab_info() == tokenization.vocab_info(meta.vocab_path, meta.do_lower_case)
  assert meta.train_files == tuple(os.path.join(data_dir, f'train-{i:05d}-of-00003.tfrecord')
                                   for i in range(3))
  # An older meta.json (without the document counts) and one with a key unknown here still load.
  meta_path = os.path.join(data_dir, 'meta.json')
  with open(meta_path) as f:
    raw = json.load(f)
  del raw['num_train_documents'], raw['num_eval_documents']
  raw['written_by_a_newer_version'] = 1
  with open(meta_path, 'w') as f:
    json.dump(raw, f)
  older = build_data.load_meta(data_dir)
  assert older.num_train_documents is None and older == dataclasses.replace(
      meta, num_train_documents=None, num_eval_documents=None)


def test_trains_sentencepiece_when_no_vocab_is_given(tmp_path):
  config = make_config(tmp_path, vocab='')
  config.model.vocab_size = 40
  data_dir = build_data.build_pretraining_data(config, '')
  meta = build_data.load_meta(data_dir)
  assert meta.vocab_kind == 'sentencepiece'
  assert meta.vocab_path == os.path.join(data_dir, 'spm.model')
  assert (meta.pad_id, meta.unk_id, meta.cls_id, meta.sep_id, meta.mask_id) == (
      0, 1, 2, 3, 4)
  with open(os.path.join(data_dir, 'meta.json')) as f:
    assert json.load(f)['vocab_path'] == 'spm.model'  # relative: the data dir can move


def test_documents_are_split_by_blank_lines_and_file_ends(tmp_path):
  a = tmp_path / 'a.txt'
  a.write_text('one.\ntwo.\n\n\n  \nthree.\n', encoding='utf-8')
  b = tmp_path / 'b.txt'
  b.write_text('four.\n', encoding='utf-8')
  corpus = corpus_lib.resolve(f'{tmp_path}/*.txt', str(tmp_path))
  assert list(corpus_lib.documents(corpus)) == [['one.', 'two.'], ['three.'], ['four.']]


def error_message(config):
  with pytest.raises(UserError) as error:
    build_data.build_pretraining_data(config, '')
  message = str(error.value)
  assert '\n' not in message
  return message


def test_corpus_glob_matching_nothing(tmp_path):
  config = make_config(tmp_path, corpus=str(tmp_path / 'missing-*.txt'))
  assert 'matches no file' in error_message(config)


def test_empty_corpus(tmp_path):
  (tmp_path / 'empty.txt').write_text('\n\n   \n', encoding='utf-8')
  config = make_config(tmp_path, corpus=str(tmp_path / 'empty.txt'))
  assert 'contains no text' in error_message(config)


def test_non_utf8_corpus_names_file_and_offset(tmp_path):
  path = tmp_path / 'latin1.txt'
  path.write_bytes('good line\ncaf\xe9\n'.encode('latin-1'))
  message = error_message(make_config(tmp_path, corpus=str(path)))
  assert f'{path} is not UTF-8 text (byte offset 13)' in message


def test_unwritable_data_dir(tmp_path):
  (tmp_path / 'a_file').write_text('x')
  config = make_config(tmp_path, data_dir=str(tmp_path / 'a_file' / 'data'))
  assert 'cannot write to data dir' in error_message(config)


def test_vocab_size_mismatch_names_the_flag(tmp_path):
  config = make_config(tmp_path)
  config.model.vocab_size = 30522
  assert error_message(config).endswith('set --config.model.vocab_size=30')


def test_vocab_without_special_tokens(tmp_path):
  (tmp_path / 'bad_vocab.txt').write_text('\n'.join(WORDS), encoding='utf-8')
  config = make_config(tmp_path, vocab=str(tmp_path / 'bad_vocab.txt'))
  assert 'lacks the special token' in error_message(config)


def test_sentencepiece_vocab_too_large_for_corpus(tmp_path):
  config = make_config(tmp_path, vocab='')
  config.model.vocab_size = 5000
  assert '--config.model.vocab_size=N with N at most' in error_message(config)


def test_too_few_examples(tmp_path):
  (tmp_path / 'one_doc.txt').write_text('alpha beta.\ngamma.\n', encoding='utf-8')
  config = make_config(tmp_path, corpus=str(tmp_path / 'one_doc.txt'))
  assert 'too few examples (1 train, 0 eval' in error_message(config)


def test_tfds_corpus(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  corpus = corpus_lib.resolve('tfds:imdb_reviews:test', str(tmp_path))
  with tfds.testing.mock_data(num_examples=3):  # offline: random text in the dataset's schema
    documents = list(corpus_lib.documents(corpus, 'text'))
    assert len(documents) == 3 and all(documents)
    with pytest.raises(UserError, match="has no feature 'body'"):
      list(corpus_lib.documents(corpus, 'body'))
  with pytest.raises(UserError, match='cannot read TFDS dataset no_such_dataset_xyz'):
    list(corpus_lib.documents(corpus_lib.resolve('tfds:no_such_dataset_xyz', '')))


def test_command_line(tmp_path):
  config_file = tmp_path / 'config.py'
  config_file.write_text('from electra_jax import defaults\n\n\ndef get_config():\n'
                         '  return defaults.get_default_config()\n')
  config = make_config(tmp_path)
  command = [sys.executable, '-m', 'electra_jax.build_data', f'--config={config_file}',
             f'--workdir={tmp_path / "work"}', f'--config.data.corpus={config.data.corpus}',
             f'--config.data.vocab={config.data.vocab}', '--config.model.vocab_size=30',
             '--config.max_seq_length=32', '--config.data.num_shards=2',
             '--config.data.num_processes=1']
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
  assert done.returncode == 0, done.stderr
  assert build_data.load_meta(str(tmp_path / 'work' / 'data')).num_train_examples > 0

  command[-1] = '--config.model.vocab_size=31'
  done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
  assert done.returncode == 1
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert errors == ['error: vocabulary ' + config.data.vocab + ' has 30 tokens but model.vocab_size '
                    'is 31; set --config.model.vocab_size=30']


def test_demo_corpus_is_deterministic_prose_in_documents(tmp_path):
  first = demo_corpus.write_demo_corpus(str(tmp_path / 'a.txt'))
  second = demo_corpus.write_demo_corpus(str(tmp_path / 'b.txt'))
  with open(first, 'rb') as f:
    data = f.read()
  with open(second, 'rb') as f:
    assert f.read() == data
  assert len(data) > 1_000_000
  text = data.decode('utf-8')
  documents = text.split('\n\n')
  assert len(documents) > 100
  lines = [line for line in text.splitlines() if line]
  assert not any(line.startswith('>>>') or line != line.strip() for line in lines)
  assert sorted(os.listdir(tmp_path)) == ['a.txt', 'b.txt']  # no temporary file left
