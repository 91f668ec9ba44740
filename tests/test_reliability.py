"""When things go wrong: divergence, damaged checkpoints, a full disk, a resume on other data, and a
table of bad inputs (each one `error:` line, nothing in the workdir destroyed). Preemption (a real
SIGTERM) and the workdir lock are in test_train.py, next to the kill -9 test (they share a run)."""
import functools
import json
import os
import random
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from electra_jax import build_data
from electra_jax import checkpoint
from electra_jax import main as main_lib
from electra_jax import model as model_lib
from electra_jax import optim
from electra_jax import sharding
from electra_jax import train
from electra_jax import train_state
from electra_jax.errors import UserError
from electra_jax.finetune import loop
from test_finetune_classification import finetune_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = 'the a cat dog sat ran on under mat log big small happy sad'.split()
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.'] + WORDS


@pytest.fixture(scope='module')
def corpus_dir(tmp_path_factory):
  """corpus.txt, vocab.txt and the data built from them (corpus_dir/data)."""
  tmp = tmp_path_factory.mktemp('reliability')
  rng = random.Random(0)
  docs = ['\n'.join(' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + '.'
                    for _ in range(rng.randint(2, 5))) for _ in range(60)]
  (tmp / 'corpus.txt').write_text('\n\n'.join(docs) + '\n')
  (tmp / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
  build_data.build_pretraining_data(pretrain_config(str(tmp)), str(tmp))
  return str(tmp)


def pretrain_config(corpus_dir, **overrides):
  c = tiny_config(vocab_size=len(VOCAB), **overrides)
  c.data.corpus = os.path.join(corpus_dir, 'corpus.txt')
  c.data.vocab = os.path.join(corpus_dir, 'vocab.txt')
  c.data.data_dir = os.path.join(corpus_dir, 'data')
  c.data.num_shards, c.data.num_processes, c.data.eval_fraction = 2, 1, 0.1
  c.data.shuffle_buffer = 64
  return c


@pytest.fixture(scope='module')
def finished_run(corpus_dir, tmp_path_factory):
  """A finished 6-step run: checkpoints 3 and 6, metrics, pretrained/, config.json."""
  workdir = str(tmp_path_factory.mktemp('finished') / 'work')
  train.train_and_evaluate(pretrain_config(corpus_dir), workdir)
  return workdir


def snapshot(*directories):
  """{path: (size, mtime)} of every file under the directories (the lock file aside: a refused run
  takes the lock of a free workdir before it finds the problem)."""
  files = {}
  for directory in directories:
    for root, _, names in os.walk(directory):
      for name in names:
        if name not in ('lock', 'build.lock'):
          path = os.path.join(root, name)
          files[path] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return files


def assert_nothing_destroyed(before, after):
  for path, stamp in before.items():
    assert after.get(path) == stamp, f'{path} was removed or changed'


# ---- Divergence.

def test_non_finite_step_is_not_applied_and_counted():
  """apply_if_finite on a toy state: a NaN step changes nothing but the counter and the record;
  with a limit of 2, the 2nd in a row freezes the state (later finite steps are not applied)."""
  tx = optax.sgd(1.0)
  params = {'w': jnp.ones(3)}
  state = train_state.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                                 train_state.new_nonfinite_record())
  step = jax.jit(lambda s, g, loss: train_state.apply_if_finite(
      s, {'w': g}, {'loss': loss, 'grad_norm': jnp.linalg.norm(g)}, tx, 2))
  g = jnp.full(3, 0.5)
  state = step(state, g, 1.0)  # applied
  np.testing.assert_array_equal(state.params['w'], [0.5] * 3)
  state = step(state, g, jnp.nan)  # step 2: loss NaN, not applied
  np.testing.assert_array_equal(state.params['w'], [0.5] * 3)
  assert jax.device_get(state.nonfinite) == {'count': 1, 'streak': 1, 'step': 2, 'what': 1}
  state = step(state, g, 1.0)  # finite again: applied, streak reset
  np.testing.assert_array_equal(state.params['w'], [0.0] * 3)
  assert int(state.nonfinite['streak']) == 0 and int(state.step) == 3
  state = step(state, jnp.array([1.0, jnp.inf, 0.0]), 1.0)  # step 4: gradient norm inf
  state = step(state, g, jnp.nan)  # step 5: the 2nd in a row reaches the limit
  state = step(state, g, 1.0)  # frozen: finite, yet not applied
  np.testing.assert_array_equal(state.params['w'], [0.0] * 3)
  assert jax.device_get(state.nonfinite) == {'count': 3, 'streak': 2, 'step': 5, 'what': 1}
  assert int(state.step) == 6


@pytest.mark.parametrize('policy', ['stop', 'skip_step'])
def test_divergence_stops_the_run_and_saves_nothing_non_finite(corpus_dir, tmp_path, policy):
  """lr 1e4: the loss turns NaN after a few steps. The run stops with one line naming the step and
  the losses; the latest checkpoint is the last good one (finite); nothing is exported; no metric
  of a NaN step is shown as a number. skip_step: 3 NaN steps in a row are skipped and counted."""
  config = pretrain_config(corpus_dir, num_train_steps=30, checkpoint_every_steps=2,
                           eval_every_steps=100, nan_policy=policy, max_consecutive_nonfinite=3,
                           **{'optim.learning_rate': 1e4, 'optim.warmup_steps': 0})
  workdir = str(tmp_path / 'work')
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert message.startswith('non-finite loss, mlm_loss, disc_loss, grad_norm at step ')
  stopped_at = int(message.split(' at step ')[1].split()[0].rstrip(':'))
  rows = {r['step']: r for r in map(json.loads, open(os.path.join(workdir, 'metrics.jsonl')))
          if r['kind'] == 'train'}
  assert sorted(rows) == list(range(1, stopped_at))  # the stopping step is not logged
  if policy == 'stop':
    assert all(np.isfinite(r['loss']) for r in rows.values())
  else:
    assert '(3 steps in a row, nan_policy=skip_step)' in message
    skipped = [rows[s] for s in (stopped_at - 2, stopped_at - 1)]
    assert [r['nonfinite_steps'] for r in skipped] == [1, 2]
    for row in skipped:  # no accuracy or AUC of NaN outputs
      assert all(np.isnan(row[k]) for k in ('loss', 'disc_auc', 'disc_accuracy', 'mlm_accuracy'))
  latest = (stopped_at - 1) // 2 * 2  # the last checkpoint step before it
  assert f'the latest checkpoint in {workdir}/checkpoints is {latest}' in message and latest > 0
  manager = checkpoint.checkpoint_manager(workdir, config)
  assert manager.latest_step() == latest
  state = manager.restore(latest)
  manager.close()
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))
  assert not os.path.exists(os.path.join(workdir, 'pretrained'))


# ---- Damaged checkpoints.

def abstract_state(config):
  model = model_lib.make_pretrainer(config)
  tx = optim.make_optimizer(config.optim, config.num_train_steps,
                            optim.learning_rate_schedule(config.optim, config.num_train_steps))
  mesh = sharding.make_mesh(config.mesh_shape)
  shapes = jax.eval_shape(functools.partial(train.create_train_state, model, tx), jax.random.key(0))
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                     sharding=sharding.replicated(mesh)), shapes)


def _largest_data_file(step_dir):
  d = os.path.join(step_dir, 'default', 'ocdbt.process_0', 'd')
  return max((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getsize)


def _another_model(step_dir):
  """Replaces the step with an orbax checkpoint of other shapes (another config's)."""
  other = os.path.join(os.path.dirname(step_dir), 'other')
  with ocp.CheckpointManager(other, item_handlers=ocp.StandardCheckpointHandler()) as manager:
    manager.save(6, args=ocp.args.StandardSave({'step': np.int32(6), 'params': {
        'embeddings': {'word_embeddings': {'embedding': np.zeros((7, 5), np.float32)}}}}))
  shutil.rmtree(step_dir)
  shutil.move(os.path.join(other, '6'), step_dir)
  shutil.rmtree(other)


DAMAGES = {
    'missing_file': lambda d: os.remove(_largest_data_file(d)),
    'truncated_file': lambda d: os.truncate(_largest_data_file(d),
                                            os.path.getsize(_largest_data_file(d)) // 2),
    'empty_folder': lambda d: (shutil.rmtree(d), os.makedirs(d)),
    'empty_item_folder': lambda d: (shutil.rmtree(os.path.join(d, 'default')),
                                    os.makedirs(os.path.join(d, 'default'))),
    'truncated_metadata': lambda d: os.truncate(os.path.join(d, 'default', '_METADATA'), 5),
    'another_model': _another_model,
    'temporary_folder': lambda d: os.rename(d, d + '.orbax-checkpoint-tmp-1234'),  # a killed save
}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(corpus_dir, finished_run, tmp_path,
                                                                 damage, capsys):
  workdir = str(tmp_path / 'work')
  shutil.copytree(finished_run, workdir)
  step_dir = os.path.join(workdir, 'checkpoints', '6')
  DAMAGES[damage](step_dir)
  config = pretrain_config(corpus_dir)
  manager = checkpoint.checkpoint_manager(workdir, config)
  state = checkpoint.restore_latest(manager, abstract_state(config))
  assert int(state.step) == 3 and manager.all_steps() == [3]  # and orbax saves 6 again
  manager.close()
  out = capsys.readouterr().out.splitlines()
  if damage == 'temporary_folder':  # never a checkpoint: the manager removed it, nothing to say
    assert out == [] and os.listdir(os.path.dirname(step_dir)) == ['3']
    return
  assert out[0].startswith(f'checkpoint 6 in {workdir}/checkpoints cannot be read (')
  assert out[0].endswith('); using 3'), out[0]
  assert out[1] == f'moved the unreadable checkpoint 6 to {step_dir}.unreadable'
  assert os.path.isdir(step_dir + '.unreadable') and not os.path.exists(step_dir)


def test_no_readable_checkpoint_is_one_error_naming_the_folder(corpus_dir, finished_run, tmp_path):
  workdir = str(tmp_path / 'work')
  shutil.copytree(finished_run, workdir)
  DAMAGES['truncated_file'](os.path.join(workdir, 'checkpoints', '6'))
  DAMAGES['empty_folder'](os.path.join(workdir, 'checkpoints', '3'))
  before = snapshot(workdir)
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(pretrain_config(corpus_dir), workdir)
  message = str(error.value)
  assert message.startswith(f'no checkpoint in {workdir}/checkpoints can be restored (step 6: ')
  assert '; step 3: ' in message and '\n' not in message
  assert_nothing_destroyed(before, snapshot(workdir))


def test_damaged_checkpoint_run_continues_from_the_previous(corpus_dir, finished_run, tmp_path):
  """End to end: the run resumes from 3, writes 6 again, and ends as the undamaged run did."""
  workdir = str(tmp_path / 'work')
  shutil.copytree(finished_run, workdir)
  DAMAGES['missing_file'](os.path.join(workdir, 'checkpoints', '6'))
  result = train.train_and_evaluate(pretrain_config(corpus_dir), workdir)
  assert result['step'] == 6
  rows = lambda w: [json.loads(l) for l in open(os.path.join(w, 'metrics.jsonl'))
                    if '"train"' in l]
  assert [r['loss'] for r in rows(workdir)] == [r['loss'] for r in rows(finished_run)]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6', '6.unreadable']


def test_finetune_resume_skips_a_damaged_checkpoint(tmp_path, capsys):
  """A finished fine-tuning run whose latest checkpoint (6) is damaged: the same command resumes
  the seed from 4, trains 5 and 6 again and gives the same results."""
  config = finetune_config(task='sst', num_train_steps=6, eval_every_steps=2, log_every_steps=1,
                           keep_checkpoints=2, **{'optim.learning_rate': 2e-3})
  workdir = str(tmp_path / 'ft')
  first = loop.run(config, workdir)
  seed_dir = os.path.join(workdir, 'seed_0')
  DAMAGES['truncated_file'](os.path.join(seed_dir, 'checkpoints', '6'))
  capsys.readouterr()
  again = loop.run(config, workdir)
  out = capsys.readouterr().out
  assert f'checkpoint 6 in {seed_dir}/checkpoints cannot be read (' in out
  assert 'resuming at step 4' in out
  assert again['seeds'][0]['best'] == first['seeds'][0]['best']
  best_step = first['seeds'][0]['best_step']
  assert again['seeds'][0]['best_step'] == best_step
  # The latest 2 (6 written again) and the best dev checkpoint, which orbax keeps besides them.
  assert sorted(os.listdir(os.path.join(seed_dir, 'checkpoints'))) == sorted(
      {'4', '6', '6.unreadable', str(best_step)})


# ---- A full disk while checkpointing.

DISK_FULL_CONFIG = '''
import errno
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from electra_jax import checkpoint

_save = checkpoint.save


def _save_after_the_disk_filled_up(manager, step, state, *args, **kwargs):
  # Another process fills the disk between the first and the second checkpoint: once checkpoint
  # 3 is complete, a ballast file takes every free byte of the tmpfs (outside the workdir).
  if step == 6:
    manager.wait_until_finished()
    with open({ballast!r}, 'wb', buffering=0) as f:  # unbuffered: close() has nothing to write
      for chunk in (1 << 20, 4096, 1):
        try:
          while True:
            f.write(b'\\0' * chunk)
        except OSError as e:
          assert e.errno == errno.ENOSPC, e
  return _save(manager, step, state, *args, **kwargs)


checkpoint.save = _save_after_the_disk_filled_up


def get_config():
  c = tiny_config(vocab_size={vocab_size}, num_train_steps=9, checkpoint_every_steps=3,
                  keep_checkpoints=1, log_every_steps=3, eval_every_steps=10**6)
  c.data.update({data!r})
  return c
'''


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(corpus_dir, tmp_path):
  """The workdir on a tmpfs (in a user + mount namespace: no root needed) that fills up after the
  first checkpoint: the second save fails with one error line; the first checkpoint is intact and
  a run with space resumes from it."""
  if subprocess.run(['unshare', '-Urm', 'true'], capture_output=True).returncode != 0:
    pytest.skip('no unprivileged user namespaces here (unshare -Urm): cannot mount a tmpfs')
  config = pretrain_config(corpus_dir, num_train_steps=9, checkpoint_every_steps=3,
                           keep_checkpoints=1, log_every_steps=3, eval_every_steps=10**6)
  mnt, out = tmp_path / 'mnt', tmp_path / 'out'
  mnt.mkdir(), out.mkdir()
  config_file = tmp_path / 'config.py'
  config_file.write_text(DISK_FULL_CONFIG.format(
      tests=os.path.join(ROOT, 'tests'), vocab_size=len(VOCAB), data=config.data.to_dict(),
      ballast=str(mnt / 'ballast')))
  script = (f'mount -t tmpfs -o size=32m tmpfs {mnt} || exit 99; '
            f'{sys.executable} -m electra_jax.main --config={config_file} --workdir={mnt}/work '
            f'>{out}/stdout 2>{out}/stderr; echo $? >{out}/rc; cp -a {mnt}/work {out}/work')
  subprocess.run(['unshare', '-Urm', 'sh', '-c', script], cwd=ROOT, timeout=600,
                 env=dict(os.environ, PYTHONPATH=ROOT))
  stderr = (out / 'stderr').read_text()
  assert (out / 'rc').read_text().strip() == '1', stderr[-3000:]
  assert 'Traceback' not in stderr
  assert stderr.strip().splitlines()[-1] == (
      f'error: could not write a checkpoint to {mnt}/work/checkpoints: no space left on device; '
      'the checkpoints before it are intact (free some space, then rerun)')
  workdir = str(out / 'work')
  left = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert left[0] == '3' and left[1].startswith('6.orbax-checkpoint-tmp'), left
  result = train.train_and_evaluate(config, workdir)  # now with space: resumes from 3
  assert result['step'] == 9
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    assert [json.loads(l)['step'] for l in f if '"info"' in l] == [0, 3]  # started, resumed at 3


# ---- Bad input: one `error:` line, nothing in the workdir destroyed.

def _file(name, content):
  """A setup step: writes tmp/name (str or bytes); returns its path."""
  def write(tmp):
    path = os.path.join(tmp, name)
    with open(path, 'wb') as f:
      f.write(content.encode() if isinstance(content, str) else content)
    return path
  return write


def _corpus(content):
  def setup(c, tmp, ctx):
    c.data.corpus = _file('corpus_in.txt', content)(tmp)
    c.data.data_dir = ''  # built into the workdir
  return setup


def _set(**values):
  def setup(c, tmp, ctx):
    for key, value in values.items():
      node = c
      *parents, leaf = key.split('__')
      for p in parents:
        node = node[p]
      node[leaf] = value
  return setup


def _damaged_shard(c, tmp, ctx):
  data = os.path.join(tmp, 'data')
  shutil.copytree(os.path.join(ctx['corpus_dir'], 'data'), data)
  with open(os.path.join(data, 'train-00000-of-00002.tfrecord'), 'r+b') as f:
    f.seek(100)
    f.write(b'\xff' * 16)
  c.data.data_dir = data


def _swapped_vocab(c, tmp, ctx):
  c.data.vocab = _file('vocab.txt', '\n'.join(VOCAB[:-2] + VOCAB[-1:] + VOCAB[-2:-1]) + '\n')(tmp)


def _unwritable_workdir(c, tmp, ctx):
  ctx['workdir'] = '/sys/kernel'  # a folder that even root cannot write into


def _workdir_is_a_file(c, tmp, ctx):
  ctx['workdir'] = _file('a_file', 'x')(tmp)


def _shared_data(c, tmp, ctx):
  c.max_seq_length = 32  # the shared data has 16
  ctx['also_untouched'] = os.path.join(ctx['corpus_dir'], 'data')


FIVE_MB_LINE = ' '.join(random.Random(1).choice(WORDS) for _ in range(1_100_000)) + '\n'

# id: (how to make the input bad, what the error says, the workdir holds a finished run)
PRETRAIN_CASES = {
    'batch_size_zero': (_set(batch_size=0), 'batch_size must be at least 1, got 0', True),
    'batch_size_negative': (_set(batch_size=-8), 'batch_size must be at least 1, got -8', True),
    'log_interval_zero': (_set(log_every_steps=0), 'log_every_steps must be at least 1', True),
    'checkpoint_interval_zero': (_set(checkpoint_every_steps=0), 'checkpoint_every_steps must be',
                                 True),
    'eval_interval_zero': (_set(eval_every_steps=0), 'eval_every_steps must be at least 1', True),
    'batch_not_divisible_by_mesh': (_set(mesh_shape=(2, 1, 1), batch_size=7),
                                    'batch_size 7 is not divisible by the 2 devices', True),
    'mesh_not_fitting_devices': (_set(mesh_shape=(-1, 3, 1)),
                                 'mesh_shape (-1, 3, 1) does not fit the 8 devices', True),
    'mesh_larger_than_devices': (_set(mesh_shape=(16, 1, 1)), 'does not fit the 8 devices', True),
    'seq_longer_than_positions': (_set(max_seq_length=64),
                                  'max_seq_length 64 > model.max_position_embeddings 32', True),
    'nan_policy_typo': (_set(nan_policy='skip'),
                        "nan_policy must be one of 'stop', 'skip_step', got 'skip'", True),
    'schedule_typo': (_set(optim__schedule='linear'), 'optim.schedule must be one of', True),
    'dtype_typo': (_set(model__dtype='fp16'), "model.dtype must be one of", True),
    'corpus_missing': (_set(data__corpus='/nonexistent/corpus.txt', data__data_dir=''),
                       "corpus entry '/nonexistent/corpus.txt' matches no file", False),
    'corpus_empty': (_corpus(''), 'contains no text', False),
    'corpus_blank_lines_only': (_corpus('\n  \n\t\n\n'), 'contains no text', False),
    'corpus_not_utf8': (_corpus('a cat sat.\ncaf\xe9\n'.encode('latin-1')),
                        'is not UTF-8 text (byte offset 14)', False),
    'corpus_binary': (_corpus(b'\x00\x01\x02' * 100), 'is not text: a NUL byte at byte offset 0',
                      False),
    'corpus_glob_matching_nothing': (_set(data__corpus='/nonexistent/*.txt', data__data_dir=''),
                                     'matches no file', False),
    'corpus_one_5mb_line': (_corpus(FIVE_MB_LINE), 'gives too few examples (1 train, 0 eval from '
                            '1 + 0 documents; documents are separated by blank lines', False),
    'vocab_missing': (_set(data__vocab='/nonexistent/vocab.txt', data__data_dir=''),
                      "vocabulary file '/nonexistent/vocab.txt' does not exist", False),
    'vocab_garbage': (lambda c, t, x: setattr(c.data, 'vocab', _file('v.txt', bytes(range(256)))(t)),
                      'cannot read WordPiece vocabulary', False),
    'vocab_garbage_sentencepiece': (
        lambda c, t, x: setattr(c.data, 'vocab', _file('v.model', b'garbage' * 50)(t)),
        'cannot read SentencePiece model', False),
    'vocab_size_mismatch': (_set(model__vocab_size=99, data__data_dir=''),
                            f'set --config.model.vocab_size={len(VOCAB)}', False),
    'shard_damaged': (_damaged_shard, 'train-00000-of-00002.tfrecord is damaged (', False),
    'data_of_another_seq_length': (_shared_data, 'holds data built with other settings '
                                   '(max_seq_length 16 -> 32)', False),
    'init_checkpoint_missing': (_set(init_checkpoint='/nonexistent/weights'),
                                '/nonexistent/weights does not exist', False),
    'init_checkpoint_of_another_shape': (
        lambda c, t, x: (setattr(c.model, 'intermediate_size', 48),
                         setattr(c, 'init_checkpoint', os.path.join(x['finished_run'],
                                                                    'pretrained'))),
        'has shape', False),
    'workdir_unwritable': (_unwritable_workdir, 'cannot write to workdir /sys/kernel', False),
    'workdir_is_a_file': (_workdir_is_a_file, 'is a file, not a folder', False),
    'resume_with_another_vocabulary': (_swapped_vocab,
                                       'were trained with another vocabulary (SHA-256 ', True),
    'resume_with_another_corpus': (
        lambda c, t, x: setattr(c.data, 'corpus', _file('other.txt', 'a cat.\n\nthe dog.\n')(t)),
        'were trained with corpus = ', True),
    'resume_with_another_seq_length': (_set(max_seq_length=32),
                                       'were trained with max_seq_length = 16, this run has 32',
                                       True),
    'resume_another_model': (_set(model__intermediate_size=48),
                             'can be restored (step 6: it is of another model: ', True),
    'train_mode_with_a_finetuning_config': (
        lambda c, t, x: setattr(c, 'task', 'sst'),
        '--mode=train needs a pre-training config; this one fine-tunes (it has `task`)', True),
}


def _custom(files, **values):
  def setup(c, tmp, ctx):
    c.task = 'custom'
    for name, content in files.items():
      _file(name, content)(tmp)
    for key, value in values.items():
      c.custom[key] = os.path.join(tmp, value) if key.endswith('_file') else value
  return setup


GOOD_TSV = 'text\tlabel\ngood cat\tpos\nbad dog\tneg\n'
FINETUNE_CASES = {
    'ft_missing_text_column': (_custom({'t.tsv': GOOD_TSV}, train_file='t.tsv', text_a='sentence'),
                               "line 2 has no column 'sentence'"),
    'ft_missing_label_column': (_custom({'t.tsv': 'text\ty\na\tb\n'}, train_file='t.tsv'),
                                "line 2 has no column 'label'"),
    'ft_label_not_in_labels_file': (
        _custom({'t.tsv': GOOD_TSV + 'a cat\tmeh\n', 'l.txt': 'pos\nneg\n'}, train_file='t.tsv',
                labels_file='l.txt'),
        "t.tsv line 4: label 'meh' is not one of the labels in"),
    'ft_labels_file_missing': (_custom({'t.tsv': GOOD_TSV}, train_file='t.tsv',
                                       labels_file='missing.txt'),
                               'cannot read custom.labels_file'),
    'ft_train_file_empty': (_custom({'t.tsv': ''}, train_file='t.tsv'), 't.tsv has no examples'),
    'ft_train_file_missing': (_custom({}, train_file='none.tsv'), 'none.tsv does not exist'),
    'ft_ragged_tsv_row': (_custom({'t.tsv': GOOD_TSV + 'lonely\n'}, train_file='t.tsv'),
                          't.tsv line 4: 1 field(s), but the header has 2 (text, label)'),
    'ft_ragged_csv_row': (_custom({'t.csv': 'text,label\n"a, cat",pos\nb,neg,extra\n'},
                                  train_file='t.csv'),
                          't.csv line 3: 3 field(s), but the header has 2'),
    'ft_broken_jsonl_line': (_custom({'t.jsonl': '{"text": "a", "label": "x"}\n{"text": "b", \n'},
                                     train_file='t.jsonl'),
                             't.jsonl line 2: not valid JSON ('),
    'ft_jsonl_not_an_object': (_custom({'t.jsonl': '["a", "x"]\n'}, train_file='t.jsonl'),
                               't.jsonl line 1: not a JSON object'),
    'ft_not_utf8': (_custom({'t.tsv': 'text\tlabel\ncaf\xe9\tpos\n'.encode('latin-1')},
                            train_file='t.tsv'), 't.tsv is not UTF-8 text'),
    'ft_task_typo': (_set(task='mnlii'), "unknown task 'mnlii' (did you mean 'mnli'?)"),
    'ft_custom_without_file': (_set(task='custom'), 'task custom needs --config.custom.train_file'),
    'ft_glue_files_missing': (lambda c, t, x: (setattr(c, 'task', 'rte'), setattr(c, 'data_dir', t)),
                              'rte needs '),
    'ft_seq_longer_than_positions': (_set(task='sst', max_seq_length=64),
                                     "max_seq_length 64 > the model's max_position_embeddings 32"),
    'ft_batch_size_zero': (_set(task='sst', batch_size=0), 'batch_size must be at least 1, got 0'),
    'ft_log_interval_zero': (_set(task='sst', log_every_steps=0), 'log_every_steps must be at'),
    'ft_init_checkpoint_missing': (_set(task='sst', init_checkpoint='/nonexistent/weights'),
                                   '/nonexistent/weights does not exist'),
    'ft_mode_with_a_pretraining_config': (lambda c, t, x: c.__delitem__('task'),
                                          '--mode=finetune needs a fine-tuning config'),
}


@pytest.mark.parametrize('case', list(PRETRAIN_CASES) + list(FINETUNE_CASES))
def test_bad_input_is_one_error_line_and_destroys_nothing(case, corpus_dir, finished_run, tmp_path):
  """Through main.run, as the command line calls it (which prints `error: <message>` and exits 1:
  see the command-line cases in test_train.py)."""
  ctx = {'corpus_dir': corpus_dir, 'finished_run': finished_run,
         'workdir': str(tmp_path / 'work')}
  if case in PRETRAIN_CASES:
    setup, expected, populated = PRETRAIN_CASES[case]
    config, mode = pretrain_config(corpus_dir), 'train'
  else:
    (setup, expected), populated = FINETUNE_CASES[case], False
    config, mode = finetune_config(), 'finetune'
  if populated:
    shutil.copytree(finished_run, ctx['workdir'])
  else:
    os.makedirs(ctx['workdir'])
    _file('notes.txt', 'mine')(ctx['workdir'])
  setup(config, str(tmp_path), ctx)
  watched = [d for d in (ctx['workdir'], ctx.get('also_untouched')) if d and os.path.isdir(d)]
  before = snapshot(*watched)
  with pytest.raises(UserError) as error:
    main_lib.run(mode, config, ctx['workdir'])
  message = str(error.value)
  assert expected in message and '\n' not in message, message
  assert_nothing_destroyed(before, snapshot(*watched))
  if populated:  # config.json is the one the checkpoints were written with
    with open(os.path.join(ctx['workdir'], 'config.json')) as f:
      assert json.load(f)['batch_size'] == 8 and 'pretrained' in os.listdir(ctx['workdir'])


def test_custom_tsv_fields_are_not_quoted():
  """A field that starts with '"' is text (as in GLUE's files), not a quote swallowing rows."""
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = _file('t.tsv', 'text\tlabel\n"quoted start\tpos\nnext row\tneg\nlast" row\tpos\n')(tmp)
    examples = classification_reader(path)
  assert [(e['text_a'], e['label']) for e in examples] == [
      ('"quoted start', 'pos'), ('next row', 'neg'), ('last" row', 'pos')]
  assert examples[2]['where'].endswith('t.tsv line 4')


def classification_reader(path):
  from electra_jax.finetune import classification  # pylint: disable=g-import-not-at-top
  return classification.read_custom_file(path, 'text', '', 'label', need_label=True)
