"""The pre-training loop end to end on tiny data: learning, exact resume (also after kill -9),
the demo config, and bad input (meshes: test_sharding.py)."""
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixed_uniform, ragged_batch, run_train_steps, tiny_config
from electra_jax import build_data
from electra_jax import checkpoint
from electra_jax import input_pipeline
from electra_jax import main as main_lib
from electra_jax import metrics_log
from electra_jax import model as model_lib
from electra_jax import train
from electra_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ('the a cat dog sat ran on under mat log big small red blue and then it was '
         'happy sad').split()
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '.'] + WORDS


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A tiny corpus with some structure (the generator can learn it) and a WordPiece vocab."""
  tmp = tmp_path_factory.mktemp('corpus')
  rng = random.Random(0)
  docs = []
  for _ in range(80):
    docs.append('\n'.join(
        f'the {rng.choice(["big", "small", "red", "blue"])} {rng.choice(["cat", "dog"])} '
        f'{rng.choice(["sat", "ran"])} {rng.choice(["on", "under"])} the '
        f'{rng.choice(["mat", "log"])} and it was {rng.choice(["happy", "sad"])}.'
        for _ in range(rng.randint(2, 6))))
  (tmp / 'corpus.txt').write_text('\n\n'.join(docs) + '\n')
  (tmp / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n')
  config = config_for(str(tmp / 'data'), str(tmp))
  return build_data.build_pretraining_data(config, str(tmp))


def config_for(data_dir, corpus_dir=None, **overrides):
  c = tiny_config(vocab_size=len(VOCAB), **overrides)
  c.data.data_dir = data_dir
  if corpus_dir:
    c.data.corpus = os.path.join(corpus_dir, 'corpus.txt')
    c.data.vocab = os.path.join(corpus_dir, 'vocab.txt')
  else:  # reuse the built data as is
    c.data.corpus = os.path.join(os.path.dirname(data_dir), 'corpus.txt')
    c.data.vocab = os.path.join(os.path.dirname(data_dir), 'vocab.txt')
  c.data.num_shards = 2
  c.data.num_processes = 1
  c.data.eval_fraction = 0.1
  c.data.shuffle_buffer = 64
  return c


def read_metrics(workdir, kind='train'):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(l) for l in f if metrics_log.complete_row(l)]  # a killed run may cut a line
  return {r['step']: r for r in rows if r['kind'] == kind}


def test_training_learns_and_writes_everything(data_dir, tmp_path):
  config = config_for(data_dir, num_train_steps=40, eval_every_steps=40, checkpoint_every_steps=20)
  result = train.train_and_evaluate(config, str(tmp_path))
  rows = read_metrics(str(tmp_path))
  first = np.mean([rows[s]['loss'] for s in range(1, 6)])
  last = np.mean([rows[s]['loss'] for s in range(36, 41)])
  assert last < first - 1.0, (first, last)
  assert rows[40]['learning_rate'] > 0 and rows[1]['learning_rate'] == 0.0  # the schedule's step 0
  # The reference's eval metrics, all present and in range.
  ev = result['eval']
  for k in ('mlm_loss', 'mlm_accuracy', 'sampled_accuracy', 'disc_loss', 'disc_accuracy',
            'disc_precision', 'disc_recall', 'disc_auc'):
    assert k in ev and np.isfinite(ev[k]), k
  assert ev['mlm_accuracy'] > 0.2  # the tiny "language" is easy for the generator
  assert os.listdir(os.path.join(tmp_path, 'tensorboard'))
  assert sorted(os.listdir(os.path.join(tmp_path, 'checkpoints'))) == ['20', '40']
  # The exported weights load back and reproduce the trained discriminator.
  model_config, weights, vocab = checkpoint.load_pretrained(os.path.join(tmp_path, 'pretrained'))
  assert model_config.hidden_size == config.model.hidden_size and vocab['mask_id'] == 4
  assert set(weights['discriminator']) == set(checkpoint.DISCRIMINATOR_KEYS)
  assert set(weights['generator']) == {'embeddings', 'generator', 'generator_predictions'}
  ids = jnp.array([[2, 6, 7, 8, 3]])
  model = model_lib.make_pretrainer(config)
  manager = checkpoint.checkpoint_manager(str(tmp_path), config)
  state = manager.restore(40)  # raw restore: a dict tree
  manager.close()
  args = (ids, jnp.ones_like(ids), jnp.zeros_like(ids))
  full = model.apply({'params': state['params']}, *args, method='discriminator_logits')
  exported = model.apply({'params': weights['discriminator']}, *args,
                         method='discriminator_logits')
  np.testing.assert_array_equal(full, exported)


def test_resume_after_interruption_is_exact(data_dir, tmp_path, monkeypatch):
  config = config_for(data_dir, num_train_steps=8, checkpoint_every_steps=3, eval_every_steps=4)
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  straight = read_metrics(str(tmp_path / 'straight'))

  real_batches = input_pipeline.train_batches

  def crashing_batches(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 5:
        raise RuntimeError('simulated crash at step 5')
      yield batch
  monkeypatch.setattr(input_pipeline, 'train_batches', crashing_batches)
  with pytest.raises(RuntimeError, match='simulated crash'):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(input_pipeline, 'train_batches', real_batches)
  result = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  resumed = read_metrics(str(tmp_path / 'resumed'))
  assert result['step'] == 8 and sorted(resumed) == sorted(straight)
  for step in straight:
    for k in ('loss', 'mlm_loss', 'disc_loss', 'disc_auc', 'grad_norm'):
      assert resumed[step][k] == straight[step][k], (step, k)  # bit for bit
  assert read_metrics(str(tmp_path / 'resumed'), 'eval') == read_metrics(str(tmp_path / 'straight'),
                                                                         'eval')


TINY_CONFIG_FILE = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import run_train_steps, tiny_config

def get_config():
  c = tiny_config(vocab_size={vocab_size}, num_train_steps=600,
                  checkpoint_every_steps={checkpoint_every_steps},
                  eval_every_steps=10**6, log_every_steps=25, async_checkpoints=True,
                  keep_checkpoints=2)
  c.data.update({data!r})
  return c
'''


@pytest.fixture(scope='module')
def straight_600(data_dir, tmp_path_factory):
  """The logged train rows of an uninterrupted 600-step run of TINY_CONFIG_FILE's config."""
  config = config_for(data_dir, num_train_steps=600, checkpoint_every_steps=10**6,
                      eval_every_steps=10**6, log_every_steps=25)
  workdir = str(tmp_path_factory.mktemp('straight_600'))
  train.train_and_evaluate(config, workdir)
  return read_metrics(workdir)


def tiny_command(data_dir, tmp_path, checkpoint_every_steps=25):
  """(the CLI command of a 600-step tiny run in tmp_path/work, its environment, the workdir)."""
  config_file = tmp_path / 'tiny_config.py'
  data = config_for(data_dir).data.to_dict()
  config_file.write_text(TINY_CONFIG_FILE.format(
      tests=os.path.join(ROOT, 'tests'), vocab_size=len(VOCAB), data=data,
      checkpoint_every_steps=checkpoint_every_steps))
  workdir = tmp_path / 'work'
  cmd = [sys.executable, '-m', 'electra_jax.main', f'--config={config_file}',
         f'--workdir={workdir}']
  return cmd, dict(os.environ, PYTHONPATH=ROOT), workdir


def wait_for(condition, proc, log_path, timeout=600):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not condition():
    time.sleep(0.02)
  assert proc.poll() is None and condition(), open(log_path).read()[-3000:]


def assert_same_losses(resumed, straight):
  assert sorted(resumed) == sorted(straight)
  for step in straight:
    assert resumed[step]['loss'] == straight[step]['loss'], step  # bit for bit
    assert resumed[step]['disc_auc'] == straight[step]['disc_auc'], step


# One worker runs both (test.sh: --dist loadgroup) instead of each worker building straight_600.
@pytest.mark.xdist_group('straight_600')
def test_kill_9_then_same_command_resumes_bit_for_bit(data_dir, tmp_path, straight_600):
  cmd, env, workdir = tiny_command(data_dir, tmp_path)
  log_path = tmp_path / 'killed_run.log'
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_path, 'w'),
                          stderr=subprocess.STDOUT, start_new_session=True)
  try:  # kill -9 once a checkpoint past step 50 is complete (orbax renames it into place)
    checkpoints = workdir / 'checkpoints'
    wait_for(lambda: checkpoints.exists() and max(
        [int(d) for d in os.listdir(checkpoints) if d.isdigit()], default=0) >= 50, proc, log_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  killed_at = max(read_metrics(str(workdir)))
  assert killed_at < 600
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'resuming at step' in out.stdout, out.stdout[-2000:]
  # The killed run's lock (its pid, now dead) was taken over.
  assert f'from a run that is gone (pid {proc.pid} on host' in out.stdout, out.stdout[-2000:]
  assert_same_losses(read_metrics(str(workdir)), straight_600)


@pytest.mark.xdist_group('straight_600')
def test_sigterm_saves_its_step_and_a_second_run_is_refused(data_dir, tmp_path, straight_600):
  """A real SIGTERM to a real run: it finishes the step, saves it, says where it stopped and exits
  0; meanwhile a second run on its workdir exits 1 at once; the same command then resumes bit for
  bit. (No periodic checkpoints: the one of the stop is the run's only one.)"""
  cmd, env, workdir = tiny_command(data_dir, tmp_path, checkpoint_every_steps=10**6)
  log_path = tmp_path / 'first_run.log'
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log_path, 'w'),
                          stderr=subprocess.STDOUT)
  try:
    wait_for(lambda: (workdir / 'metrics.jsonl').exists() and read_metrics(str(workdir)), proc,
             log_path)
    os.kill(proc.pid, signal.SIGSTOP)  # frozen mid-run, alive, holding the workdir
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and 'Traceback' not in second.stderr, second.stderr[-3000:]
    assert second.stderr.strip().splitlines()[-1].startswith(
        f'error: workdir {workdir} is in use by another run (pid {proc.pid} on host ')
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=300) == 0, log_path.read_text()[-3000:]
  finally:
    if proc.poll() is None:
      proc.kill()
  lines = [l for l in log_path.read_text().splitlines() if l.startswith('stopped by SIGTERM')]
  assert len(lines) == 1, log_path.read_text()[-3000:]
  stopped_at = int(lines[0].split(' at step ')[1].split()[0])
  assert 25 <= stopped_at < 600 and (workdir / 'checkpoints' / str(stopped_at)).is_dir()
  assert not (workdir / 'pretrained').exists()  # not finished, nothing exported
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert f'resuming at step {stopped_at} of 600' in out.stdout, out.stdout[-2000:]
  assert 'taking over' not in out.stdout  # the first run ended cleanly: its lock was released
  assert_same_losses(read_metrics(str(workdir)), straight_600)


def load_demo_config():
  from configs import demo  # pylint: disable=g-import-not-at-top
  return demo.get_config()


def test_demo_config_end_to_end(tmp_path):
  """The embedded default: demo corpus -> SentencePiece vocab -> shards -> a few steps."""
  config = load_demo_config()
  config.num_train_steps = 2
  config.eval_steps = 1
  config.log_every_steps = 1
  config.mesh_shape = (1, 1, 1)
  result = main_lib.run('train', config, str(tmp_path))
  assert result['step'] == 2 and 0.0 <= result['eval']['disc_auc'] <= 1.0
  meta = build_data.load_meta(str(tmp_path / 'data'))
  assert meta.vocab_kind == 'sentencepiece' and meta.vocab_size == config.model.vocab_size
  assert meta.num_train_examples > 1000


def test_checkpoint_of_another_model_size_is_one_clear_error(data_dir, tmp_path):
  train.train_and_evaluate(config_for(data_dir, num_train_steps=3), str(tmp_path))
  bigger = config_for(data_dir, num_train_steps=6, **{'model.hidden_size': 64})
  with pytest.raises(UserError, match='is of another model.*hidden|another model'):
    train.train_and_evaluate(bigger, str(tmp_path))


def test_training_without_built_data_is_one_error_and_builds_nothing(data_dir, tmp_path):
  """train_and_evaluate only reads the data: main.run('train') (or --mode=build_data) builds it."""
  config = config_for(str(tmp_path / 'data'), os.path.dirname(data_dir))
  with pytest.raises(UserError) as error:
    train.train_and_evaluate(config, str(tmp_path / 'work'))
  message = str(error.value)
  assert message == (f'{tmp_path}/data has no complete pre-training data (meta.json); run '
                     "build_data first (--mode=build_data, or main.run('train', config, workdir), "
                     'which builds, then trains)')
  assert not (tmp_path / 'data').exists()  # nothing built
  assert not os.listdir(tmp_path / 'work' / 'checkpoints')  # nor trained


def test_unwritable_workdir(data_dir, tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(UserError, match='cannot write to workdir'):
    train.train_and_evaluate(config_for(data_dir), str(tmp_path / 'file' / 'work'))


@pytest.mark.parametrize('flags,expected', [
    (['--config.data.corpus=/nonexistent/*.txt'], "corpus entry '/nonexistent/*.txt' matches no"),
    (['--config.model.no_such_key=1'], 'no_such_key'),
    (['--config.batch_size=abc'], 'batch_size'),
    (['--config.batch_size=0'], 'batch_size must be at least 1, got 0'),
    (['--config=configs/no_such_config.py'], 'the --config file configs/no_such_config.py does not'),
    (['--mode=trian'], 'flag --mode=trian: value should be one of'),
    (['--config.objective.untied_generator=False'],
     'unknown config key objective.untied_generator: it is model.untied_generator now'),
], ids=['corpus', 'unknown_key', 'ill_typed', 'batch_size_zero', 'config_file', 'mode_typo',
        'moved_key'])
def test_command_line_bad_input_is_one_line(tmp_path, flags, expected):
  """Exit status 1, one `error:` line naming the problem, no traceback, nothing written."""
  config = [f for f in flags if f.startswith('--config=')] or ['--config=configs/demo.py']
  out = subprocess.run(
      [sys.executable, '-m', 'electra_jax.main', *config, f'--workdir={tmp_path}/w',
       *[f for f in flags if not f.startswith('--config=')]],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 1
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and errors[0] == out.stderr.strip().splitlines()[-1], out.stderr[-3000:]
  assert expected in errors[0]
  assert not os.path.exists(tmp_path / 'w' / 'config.json')


# ---- Train-step variants: each equals the plain float32 step (bfloat16: close to it).

def variant_batch():
  """Rows of different real lengths: per-microbatch means would weigh their tokens unequally."""
  return ragged_batch(min_len=5)


def run_variant(**overrides):
  config = tiny_config(num_train_steps=100, **{'model.dropout_rate': 0.0,
                                               'model.attention_dropout_rate': 0.0, **overrides})
  with mock.patch.object(jax.random, 'uniform', fixed_uniform):
    _, params, metrics, losses = run_train_steps(config, variant_batch(), num_steps=2)
  return params, metrics, losses


@functools.lru_cache(maxsize=None)
def plain_step_result():
  return run_variant()


@pytest.mark.parametrize('overrides', [
    {'grad_accum_steps': 2}, {'grad_accum_steps': 4}, {'model.remat': True},
    {'model.scan_layers': True}, {'model.scan_layers': True, 'model.remat': True},
    {'grad_accum_steps': 2, 'model.scan_layers': True, 'mesh_shape': (2, 2, 2),
     'fsdp_min_size': 64}],
    ids=['accum2', 'accum4', 'remat', 'scan', 'scan_remat', 'accum2_scan_mesh222'])
def test_step_variant_equals_plain_step(overrides):
  params, metrics, losses = run_variant(**overrides)
  params1, metrics1, losses1 = plain_step_result()
  np.testing.assert_allclose(losses, losses1, rtol=1e-5)
  for k in ('mlm_loss', 'disc_loss', 'disc_auc', 'disc_accuracy', 'grad_norm'):
    np.testing.assert_allclose(metrics[k], metrics1[k], rtol=1e-5, err_msg=k)
  # Same (per-layer) parameter tree, same values.
  assert jax.tree.structure(params) == jax.tree.structure(params1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, params1)


def test_bfloat16_compute_is_close_to_float32():
  _, _, losses = run_variant(**{'model.dtype': 'bfloat16'})
  _, _, losses1 = plain_step_result()
  np.testing.assert_allclose(losses, losses1, rtol=2e-2)


def test_stack_layers_round_trip():
  config = tiny_config(**{'model.scan_layers': True})
  model = model_lib.make_pretrainer(config)
  params = jax.jit(functools.partial(model_lib.init_params, model))(jax.random.key(0))
  assert 'layer_1' in params['discriminator'] and 'layers' not in params['discriminator']
  stacked = model_lib.stack_layers(params)
  assert stacked['discriminator']['layers']['layer']['query']['kernel'].shape == (2, 32, 32)
  for i in range(2):  # layer i of the stack is layer_i
    jax.tree.map(lambda s, p, i=i: np.testing.assert_array_equal(s[i], p),
                 stacked['discriminator']['layers']['layer'], params['discriminator'][f'layer_{i}'])
  jax.tree.map(np.testing.assert_array_equal, stacked['embeddings'], params['embeddings'])


def test_grad_accum_steps_must_divide_the_batch():
  with pytest.raises(UserError, match='grad_accum_steps'):
    train.check_config(tiny_config(grad_accum_steps=3), 1)
