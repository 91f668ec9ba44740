"""Tests of the learning benchmark's text (benchmarks/doc_text.py: each manual counted once),
tasks (benchmarks/tasks.py) and its fine-tuning runs (benchmarks/learning.py)."""
import collections
import os
import random
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'benchmarks'))

import doc_text  # pylint: disable=g-import-not-at-top,wrong-import-position
import tasks  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_a_tree_reached_through_several_linked_names_is_read_once(tmp_path):
  # Debian's layout: python3.11-dev and python3.11-venv link to python3.11, and python3.11-doc
  # holds only a link to python3.11/html; a glob over python3.* reaches each file 4 times.
  sources = tmp_path / 'python3.11' / 'html' / '_sources' / 'library'
  sources.mkdir(parents=True)
  for name in ('os.rst.txt', 're.rst.txt', 'conf.py'):
    (sources / name).write_text('text\n')
  (tmp_path / 'python3.11-dev').symlink_to('python3.11')
  (tmp_path / 'python3.11-venv').symlink_to('python3.11')
  (tmp_path / 'python3.11-doc').mkdir()
  (tmp_path / 'python3.11-doc' / 'html').symlink_to('../python3.11/html')

  files = doc_text._files(str(tmp_path / 'python3.*' / 'html' / '_sources'), ('.rst.txt',))

  real = str(sources.resolve())
  assert files == [os.path.join(real, 'os.rst.txt'), os.path.join(real, 're.rst.txt')]


def test_package_versions_of_files_no_package_owns():
  # Outside a Debian package (or without dpkg), the version is 'unknown', not an error.
  assert doc_text.package_versions({'python': [os.path.abspath(__file__)]}) == {
      'python': 'unknown'}


def test_swap_adjacent_words_keeps_the_words_the_first_and_the_last():
  sentence = 'The cat sat on the mat today.'
  assert tasks.swappable_positions(sentence.split()) == [1, 2, 3, 4]
  swapped = {tasks.swap_adjacent_words(sentence, random.Random(seed)) for seed in range(40)}
  assert swapped == {'The sat cat on the mat today.', 'The cat on sat the mat today.',
                     'The cat sat the on mat today.', 'The cat sat on mat the today.'}
  # Equal neighbours are never swapped (the sentence would not change).
  assert tasks.swappable_positions('It is very very slow now.'.split()) == [1, 3]
  assert tasks.swappable_positions('A b b b b Z.'.split()) == []


def test_order_examples_are_balanced_each_sentence_once_and_dev_apart_from_train():
  words = 'alpha beta gamma delta epsilon zeta eta theta iota kappa'.split()
  rng = random.Random(0)
  docs = [('perl', [' '.join(rng.sample(words, 7)) + '.' for _ in range(50)]),
          ('perl', ['Too short here.', 'A b b b b Z.', 'It  has   odd spacing in it.'])]
  train = tasks.order_examples(docs, 20, random.Random(1))
  assert len(train) == 20
  assert collections.Counter(r['label'] for r in train) == {'0': 10, '1': 10}
  originals = {' '.join(s.split()) for _, doc in docs for s in doc}
  bags = {tuple(sorted(o.split())) for o in originals}
  for row in train:  # a swapped row is no sentence of the text, but has one's words
    assert (row['sentence'] in originals) == (row['label'] == '1')
    assert tuple(sorted(row['sentence'].split())) in bags
  assert 'Too short here.' not in str(train) and 'A b b b b Z.' not in str(train)
  # The same source sentence never appears both as written and swapped.
  bags = [tuple(sorted(r['sentence'].split())) for r in train]
  assert len(set(bags)) == len(bags)
  dev = tasks.order_examples(docs, 100, random.Random(2),
                             exclude={' '.join(s.split()) for s in docs[0][1][:40]})
  assert len(dev) == 11  # the 10 sentences train did not have, and the one with odd spacing
  assert {tuple(sorted(r['sentence'].split())) for r in dev} == {
      tuple(sorted(s.split())) for s in docs[0][1][40:] + ['It has odd spacing in it.']}


def test_splice_joins_two_sentences_at_the_first_ones_length():
  first, second = 'A1 a2 a3 a4 a5.', 'B1 b2 b3 b4 b5 b6.'
  spliced = {tasks.splice(first, second, random.Random(seed)) for seed in range(20)}
  # At least 2 words of each, never the second's first 2 words (its capital would show the cut).
  assert spliced == {'A1 a2 b4 b5 b6.', 'A1 a2 a3 b5 b6.'}
  assert tasks.splice('A1 a2 a3 a4 a5 a6.', 'B1 b2 b3.', random.Random(0)) is None
  assert tasks.splice('A1 a2 a3 a4 a5.', 'B1 b2 b3 b4.', random.Random(0)) == 'A1 a2 a3 b3 b4.'


def test_splice_examples_are_balanced_same_length_and_from_two_documents():
  rng = random.Random(0)
  docs = [(area, [f'D{d}s{i} ' + ' '.join(f'd{d}w{j}' for j in range(rng.randint(7, 12))) + '.'
                  for i in range(20)])
          for d, area in enumerate(('perl', 'perl', 'postgres'))]
  sentences = {s for _, doc in docs for s in doc}
  doc_of_word = {w: d for d, (_, doc) in enumerate(docs) for s in doc for w in s.split()}
  lengths = collections.Counter(len(s.split()) for s in sentences)
  train = tasks.splice_examples(docs, 40, random.Random(2))
  assert collections.Counter(r['label'] for r in train) == {'0': 20, '1': 20}
  for row in train:
    words = row['sentence'].split()
    assert (row['sentence'] in sentences) == (row['label'] == '1')
    assert len(words) in lengths and 8 <= len(words) <= 30
    if row['label'] == '0':  # starts in one document and ends in another
      assert doc_of_word[words[0]] != doc_of_word[words[-1]]
  # A sentence used as a spliced start is not also used as written.
  starts = [r['sentence'].split()[0] for r in train]
  assert len(set(starts)) == len(starts)
  dev = tasks.splice_examples(docs, 100, random.Random(3), exclude=set(docs[0][1][:15]))
  assert len(dev) == 45 and not {r['sentence'] for r in dev} & set(docs[0][1][:15])
  with pytest.raises(ValueError, match='no sentence of another document'):
    tasks.splice_examples(docs[:1], 10, random.Random(0))


def _fake_documentation(monkeypatch, num_docs=200):
  rng = random.Random(0)
  words = [f'w{i}' for i in range(300)]
  docs = [('perl', f'perl:doc{d}.pod',
           [' '.join(rng.choice(words) for _ in range(rng.randint(6, 12))) + '.'
            for _ in range(8)]) for d in range(num_docs)]
  monkeypatch.setattr(doc_text, 'available_sources', lambda: {'perl': ['a.pod'] * num_docs})
  monkeypatch.setattr(doc_text, 'documents', lambda sources: iter(docs))
  monkeypatch.setattr(doc_text, 'package_versions', lambda sources: {'perl': 'perl-doc 1'})
  return docs


def test_write_text_holds_documents_out_and_adds_a_new_task_leaving_the_rest(monkeypatch,
                                                                            tmp_path):
  docs = _fake_documentation(monkeypatch)
  info = tasks.write_text(str(tmp_path))
  held = [d for d in docs if tasks._bucket(d[1]) < tasks.HELD_OUT_PERCENT]
  corpus = (tmp_path / 'corpus.txt').read_text()
  assert info['pretraining_documents'] == len(docs) - len(held) and 10 < len(held) < 40
  assert all(s not in corpus for _, _, sentences in held for s in sentences)
  files = {p.name: p.read_bytes() for p in tmp_path.glob('*.jsonl')}
  assert sorted(files) == sorted(f'{t}_{s}.jsonl' for t in ('area', 'next', 'order', 'splice')
                                 for s in ('train', 'dev'))
  assert info['order_train'] > 0 and info['order_dev'] > 0
  assert info['splice_train'] > 0 and info['splice_dev'] > 0
  # A workdir written before `order` existed: the task is built, nothing else is touched.
  for split in ('train', 'dev'):
    (tmp_path / f'order_{split}.jsonl').unlink()
  corpus_time = (tmp_path / 'corpus.txt').stat().st_mtime_ns
  assert tasks.write_text(str(tmp_path)) == info
  assert {p.name: p.read_bytes() for p in tmp_path.glob('*.jsonl')} == files
  assert (tmp_path / 'corpus.txt').stat().st_mtime_ns == corpus_time


def test_write_text_refuses_a_workdir_of_other_documentation(monkeypatch, tmp_path):
  _fake_documentation(monkeypatch)
  tasks.write_text(str(tmp_path))
  (tmp_path / 'order_dev.jsonl').unlink()
  _fake_documentation(monkeypatch, num_docs=150)
  with pytest.raises(SystemExit, match='written from other documentation'):
    tasks.write_text(str(tmp_path))
  assert not (tmp_path / 'order_dev.jsonl').exists()


def test_learning_says_a_stopped_pre_training_or_fine_tuning_can_be_resumed(tmp_path):
  # The training loops return {'stopped': reason} on SIGTERM (their checkpoint saved, but not the
  # last step's, and no results.json); learning.py must say so in one line instead of failing to
  # restore the last step's checkpoint or to open results.json.
  # A subprocess: learning.py defines absl flags at import, which other test modules define too.
  # It also checks that --finetune_head_init and --probe_only reach the fine-tuning config, and
  # that a pre-trained encoder is probed once (the fit does not depend on the seed).
  code = f"""
import sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(tasks.__file__))!r})
from absl import flags
import ml_collections
import learning
from electra_jax import train
from electra_jax.finetune import loop
loop.run = lambda config, workdir: print('head_init', config.head_init, config.probe_only,
                                         config.num_trials) or {{
    'task': 'next', 'seeds': [], 'stopped': 'SIGTERM'}}
train.train_and_evaluate = lambda config, workdir: {{'step': 721, 'stopped': 'SIGINT'}}
flags.FLAGS(['learning', '--finetune_head_init=probe', '--probe_only'])
try:
  learning.pretrain('mlm', ml_collections.ConfigDict({{'num_train_steps': 14260}}), '/runs/mlm')
except SystemExit as e:
  print(e)
learning.finetune('/nowhere', None, '', 'next', {str(tmp_path)!r}, {str(tmp_path / 'ft')!r}, 0.0)
"""
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert done.returncode == 1, done.stderr[-2000:]
  assert ('learning.py: pre-training of mlm was stopped (SIGINT) at step 721 of 14260; run the '
          'same command again to resume it from /runs/mlm') in done.stdout.splitlines(), done.stdout
  assert 'head_init probe True 1' in done.stdout, done.stdout
  last = done.stderr.strip().splitlines()[-1]
  assert last == ('learning.py: fine-tuning on next was stopped (SIGTERM) before it finished; '
                  f'run the same command again to resume it from {tmp_path / "ft"}')
