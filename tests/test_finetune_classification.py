"""Fine-tuning classification: GLUE readers, layer-wise LR decay factors, and a tiny end-to-end run
(exported tiny pre-trained weights -> learnable SST-2-format fixture) through main.run."""
import csv
import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from electra_jax import checkpoint
from electra_jax import main as main_lib
from electra_jax import model as model_lib
from electra_jax import optim
from electra_jax import tokenization
from electra_jax.errors import UserError
from electra_jax.finetune import classification
from electra_jax.finetune import loop
from electra_jax.finetune import model as ft_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'finetune')
VOCAB = os.path.join(FIXTURES, 'vocab.txt')


def finetune_config(**overrides):
  """configs/finetune.py with the tiny model of conftest (2 layers, hidden 32)."""
  from configs import finetune  # pylint: disable=g-import-not-at-top
  c = finetune.get_config()
  tiny = tiny_config(vocab_size=len(open(VOCAB).read().split()))
  for key in c.model:  # fine-tuning's model keys (no generator)
    c.model[key] = tiny.model[key]
  c.mesh_shape = (1, 1, 1)
  c.data.vocab = VOCAB
  c.data_dir = FIXTURES
  c.batch_size = 8
  c.eval_batch_size = 8
  c.max_seq_length = 16
  c.log_every_steps = 20
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope='module')
def pretrained_dir(tmp_path_factory):
  """Tiny ELECTRA weights in the exported pretrained/ layout (random init, not pre-trained)."""
  directory = str(tmp_path_factory.mktemp('pretrain') / 'pretrained')
  config = tiny_config(vocab_size=len(open(VOCAB).read().split()))
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(42))
  checkpoint.export_pretrained(directory, params, config,
                               {'vocab_path': VOCAB, 'do_lower_case': True})
  return directory


@pytest.fixture(scope='module')
def pretrained_workdir(tmp_path_factory):
  """A real (tiny, 30-step) ELECTRA pre-training run on the fixture's sentences: its workdir."""
  tmp = tmp_path_factory.mktemp('pretrain_run')
  sentences = [r.split('\t')[0] for r in open(os.path.join(FIXTURES, 'SST-2', 'train.tsv'))][1:]
  docs = ['\n'.join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
  (tmp / 'corpus.txt').write_text('\n\n'.join(docs) + '\n')
  config = tiny_config(vocab_size=len(open(VOCAB).read().split()), num_train_steps=30,
                       eval_every_steps=30, checkpoint_every_steps=30)
  config.data.corpus, config.data.vocab = str(tmp / 'corpus.txt'), VOCAB
  config.data.num_shards, config.data.num_processes, config.data.eval_fraction = 1, 1, 0.1
  config.data.shuffle_buffer = 64
  main_lib.run('train', config, str(tmp / 'workdir'))  # builds the data, then trains
  return str(tmp / 'workdir')


def test_glue_readers_columns():
  cola = classification.read_glue_tsv(classification.GLUE['cola'], FIXTURES, 'train')
  assert [(e['text_a'], e['label']) for e in cola][:2] == [('the cat sat .', '1'),
                                                          ('cat the sat on .', '0')]
  test = classification.read_glue_tsv(classification.GLUE['cola'], FIXTURES, 'test')
  assert test[1] == {'id': '1', 'text_a': 'ran dog .', 'text_b': None, 'label': None}
  mnli = classification.read_glue_tsv(classification.GLUE['mnli'], FIXTURES, 'dev_mismatched')
  assert (mnli[1]['text_a'], mnli[1]['text_b'], mnli[1]['label']) == (
      'the cat sat', 'the cat ran', 'contradiction')
  mrpc = classification.read_glue_tsv(classification.GLUE['mrpc'], FIXTURES, 'train')  # BOM
  assert (mrpc[0]['text_b'], mrpc[0]['label']) == ('a cat sat .', '1')
  with pytest.raises(UserError, match='QQP/train.tsv'):
    classification.read_glue_tsv(classification.GLUE['qqp'], FIXTURES, 'train')


def test_glue_reader_skips_short_rows_as_the_original_and_names_the_first(tmp_path, capsys):
  _glue_files(tmp_path, 'SST-2', {'train.tsv': 'sentence\tlabel\na cat\t1\nbroken row\nthe dog\t0\n'})
  examples = classification.read_glue_tsv(classification.GLUE['sst'], str(tmp_path), 'train')
  assert [e['text_a'] for e in examples] == ['a cat', 'the dog']
  assert capsys.readouterr().out.strip().endswith(
      'train.tsv: skipped 1 malformed row(s) (the first: line 3, 1 fields, 2 needed)')


def test_custom_reader_jsonl_and_csv(tmp_path):
  (tmp_path / 'a.jsonl').write_text('{"q": "good cat", "y": "pos"}\n{"q": "bad dog", "y": "neg"}\n')
  examples = classification.read_custom_file(str(tmp_path / 'a.jsonl'), 'q', '', 'y')
  assert [(e['text_a'], e['label']) for e in examples] == [('good cat', 'pos'), ('bad dog', 'neg')]
  (tmp_path / 'b.csv').write_text('s1,s2,score\n"a, cat",a dog,3.5\n')
  examples = classification.read_custom_file(str(tmp_path / 'b.csv'), 's1', 's2', 'score')
  assert examples[0]['text_a'] == 'a, cat' and examples[0]['label'] == '3.5'
  with pytest.raises(UserError, match="no column 'text'"):
    classification.read_custom_file(str(tmp_path / 'b.csv'), 'text', '', 'score')


def _factors(rule):
  config = tiny_config()
  model = ft_model.FinetuneModel(config.model, 'classification', 3)
  params = ft_model.init_params(model, jax.random.key(0))
  return optim.layerwise_lr_factors(params, 2, 0.5, original_off_by_one=(rule == 'original'))


def test_layerwise_lr_decay_factors():
  d = 0.5
  f = _factors('correct')  # 2 layers: head 1, top layer d, layer_0 d^2, embeddings d^3
  assert f['classifier']['kernel'] == 1.0 and f['classifier']['bias'] == 1.0
  assert f['discriminator']['layer_1']['query']['kernel'] == d
  assert f['discriminator']['layer_1']['output_LayerNorm']['scale'] == d
  assert f['discriminator']['layer_0']['intermediate']['kernel'] == d ** 2
  assert f['discriminator']['embeddings_project']['kernel'] == d ** 3  # embedding 24 -> hidden 32
  assert f['embeddings']['word_embeddings']['embedding'] == d ** 3
  assert f['embeddings']['LayerNorm']['scale'] == d ** 3
  f = _factors('original')  # the original's off-by-one: top layer d^2
  assert f['classifier']['kernel'] == 1.0
  assert f['discriminator']['layer_1']['query']['kernel'] == d ** 2
  assert f['discriminator']['layer_0']['query']['kernel'] == d ** 3
  assert f['embeddings']['word_embeddings']['embedding'] == d ** 4


def test_layerwise_factors_scale_the_whole_update():
  o = tiny_config().optim
  o.learning_rate, o.warmup_steps, o.clip_norm, o.weight_decay = 0.1, 0, 0.0, 0.01
  params = {'embeddings': {'w': {'kernel': jnp.ones(3)}}, 'classifier': {'kernel': jnp.ones(3)},
            'discriminator': {'layer_0': {'kernel': jnp.ones(3)}}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)
  factors = optim.layerwise_lr_factors(params, 1, 0.5)
  plain = optim.make_optimizer(o, 10)
  scaled = optim.make_optimizer(o, 10, lr_factors=factors)
  u_plain, _ = plain.update(grads, plain.init(params), params)
  u_scaled, _ = scaled.update(grads, scaled.init(params), params)
  for keys, factor in ((('classifier', 'kernel'), 1.0), (('discriminator', 'layer_0', 'kernel'), 0.5),
                       (('embeddings', 'w', 'kernel'), 0.25)):
    a, b = u_plain, u_scaled
    for k in keys:
      a, b = a[k], b[k]
    np.testing.assert_allclose(b, factor * a, rtol=1e-6)


def test_pretrained_weights_drop_in(pretrained_dir):
  config = finetune_config(init_checkpoint=os.path.dirname(pretrained_dir),  # the workdir works
                          **{'model.dropout_rate': 0.25, 'model.remat': True})
  model_config, body, vocab_path, _ = loop.load_init_checkpoint(config)
  assert vocab_path == VOCAB and set(body) == {'embeddings', 'discriminator'}
  # Dropout and remat are the fine-tuning run's (the checkpoint was pre-trained with 0.1, no remat).
  assert model_config.dropout_rate == 0.25 and model_config.attention_dropout_rate == 0.1
  assert model_config.remat
  model = ft_model.FinetuneModel(model_config, 'classification', 2)
  params = loop.load_body(ft_model.init_params(model, jax.random.key(1)), body)
  np.testing.assert_array_equal(params['discriminator']['layer_1']['query']['kernel'],
                                body['discriminator']['layer_1']['query']['kernel'])
  assert 'classifier' in params
  bad = dict(body, discriminator={k: v for k, v in body['discriminator'].items() if k != 'layer_1'})
  with pytest.raises(UserError, match='layer_1'):
    loop.load_body(params, bad)


def test_init_from_hf_checkpoint(pretrained_dir, tmp_path):
  """The same weights exported in the HF layout (convert.py) fine-tune identically."""
  from electra_jax import convert  # pylint: disable=g-import-not-at-top
  hf_dirs = convert.write(convert.read(pretrained_dir), 'hf', str(tmp_path / 'hf'))
  disc_dir = [d for d in hf_dirs if d.endswith('discriminator')][0]
  _, ours, _, _ = loop.load_init_checkpoint(finetune_config(init_checkpoint=pretrained_dir))
  model_config, theirs, vocab_path, _ = loop.load_init_checkpoint(
      finetune_config(init_checkpoint=disc_dir))
  assert model_config.num_layers == 2 and os.path.basename(vocab_path) == 'vocab.txt'
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_finetune_learns_fixture_task_two_seeds(pretrained_workdir, tmp_path):
  """SST-2-format fixture: label = sentence has 'good' (vs 'bad'); majority class ~56% on dev.
  Starts from a real (tiny, 30-step) pre-training workdir."""
  config = finetune_config(task='sst', init_checkpoint=pretrained_workdir, num_trials=2,
                           num_train_epochs=8.0, **{'optim.learning_rate': 2e-3})
  workdir = str(tmp_path / 'ft')
  results = main_lib.run(None, config, workdir)  # no mode: the `task` key selects fine-tuning
  dev_labels = [int(r[1]) for r in list(csv.reader(
      open(os.path.join(FIXTURES, 'SST-2', 'dev.tsv')), delimiter='\t'))[1:]]
  majority = 100 * max(np.mean(dev_labels), 1 - np.mean(dev_labels))
  assert majority < 60
  accuracies = [r['best']['dev']['accuracy'] for r in results['seeds']]
  assert [r['seed'] for r in results['seeds']] == [0, 1]
  assert min(accuracies) >= 90, accuracies
  assert results['median']['dev']['accuracy'] == pytest.approx(np.median(accuracies))
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['median'] == results['median']
  submission = open(os.path.join(workdir, 'seed_0', 'predictions', 'SST-2.tsv')).read().split('\n')
  assert submission[0] == 'index\tprediction' and len(submission) == 6  # header, 4 rows, ''
  assert all(line.split('\t')[1] in ('0', '1') for line in submission[1:5])
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'seed_1', 'metrics.jsonl'))]
  assert any(r['kind'] == 'eval' for r in rows)
  assert os.path.isdir(os.path.join(workdir, 'seed_1', 'tensorboard'))


def test_regression_custom_task(tmp_path):
  """Random init (no init_checkpoint), custom JSONL regression in bfloat16: runs, reports
  Pearson/Spearman."""
  rng = np.random.default_rng(0)
  for split, n in (('train', 32), ('dev', 16)):
    with open(tmp_path / f'{split}.jsonl', 'w') as f:
      for _ in range(n):
        k = int(rng.integers(0, 4))
        text = ' '.join(['good'] * k + ['cat'] * (4 - k))
        f.write(json.dumps({'text': text, 'score': k / 4}) + '\n')
  config = finetune_config(task='custom', num_train_steps=8, eval_every_steps=8,
                           **{'custom.train_file': str(tmp_path / 'train.jsonl'),
                              'custom.dev_file': str(tmp_path / 'dev.jsonl'),
                              'custom.label': 'score', 'custom.regression': True,
                              'model.dtype': 'bfloat16'})
  results = loop.run(config, str(tmp_path / 'ft'))
  assert set(results['median']['dev']) == {'pearson', 'spearman', 'score'}


def test_bad_input_is_one_line(tmp_path):
  config = finetune_config(task='nonesuch')
  with pytest.raises(UserError, match='unknown task'):
    loop.run(config, str(tmp_path))


def _glue_files(root, folder, files):
  os.makedirs(os.path.join(root, folder), exist_ok=True)
  for name, text in files.items():
    with open(os.path.join(root, folder, name), 'w') as f:
      f.write(text)


def test_glue_submission_files_swap_and_diagnostic(tmp_path):
  tokenizer = tokenization.load_tokenizer(VOCAB)
  sts = 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n'
  row = '{}\tmain\tf\t2012\t0\ts\ts\tthe cat\ta dog\t{}\n'
  _glue_files(tmp_path, 'STS-B', {
      'train.tsv': sts + row.format(0, '4.2') + row.format(1, '1.0'),
      'dev.tsv': sts + row.format(0, '3.0'),
      'test.tsv': 'index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n'
                  '7\tmain\tf\t2012\t0\ts\ts\tthe cat\ta dog\n'})
  task = classification.ClassificationTask(finetune_config(task='sts-b', data_dir=str(tmp_path)),
                                           tokenizer)
  assert task.head == 'regression' and task.epochs == 10.0
  assert len(task.train['input_ids']) == 4  # (A, B) and (B, A)
  np.testing.assert_allclose(task.train['label'], [4.2, 1.0, 4.2, 1.0], rtol=1e-6)
  path = task.write_predictions('test', {'prediction': np.array([3.14159])}, str(tmp_path / 'out'))
  assert os.path.basename(path) == 'STS-B.tsv'
  assert open(path).read() == 'index\tprediction\n7\t3.142\n'

  # MNLI: test_matched present, test_mismatched absent (skipped), diagnostic -> AX.tsv.
  mnli_dir = os.path.join(FIXTURES, 'MNLI')
  for name in ('train', 'dev_matched', 'dev_mismatched'):
    text = open(os.path.join(mnli_dir, f'{name}.tsv')).read()
    _glue_files(tmp_path, 'MNLI', {f'{name}.tsv': text})
  header = open(os.path.join(mnli_dir, 'train.tsv')).readline().split('\t')[:10]  # no labels
  _glue_files(tmp_path, 'MNLI', {'test_matched.tsv': '\t'.join(header) + '\n'
              '0\t1\t1\tf\t(a)\t(b)\t(a)\t(b)\tthe cat\ta cat\n'})
  _glue_files(tmp_path, 'diagnostic', {'diagnostic.tsv': 'index\tsentence1\tsentence2\n0\ta\tb\n'})
  task = classification.ClassificationTask(finetune_config(task='mnli', data_dir=str(tmp_path)),
                                           tokenizer)
  assert task.test_splits == ('test_matched', 'diagnostic')
  assert len(task.train['input_ids']) == 3  # no swap for MNLI
  out = str(tmp_path / 'out')
  path = task.write_predictions('test_matched', {'prediction': np.array([1])}, out)
  assert os.path.basename(path) == 'MNLI-m.tsv'
  assert open(path).read() == 'index\tprediction\n0\tentailment\n'
  path = task.write_predictions('diagnostic', {'prediction': np.array([2])}, out)
  assert os.path.basename(path) == 'AX.tsv' and open(path).read().endswith('0\tneutral\n')


def test_tfds_glue_maps_labels_by_name(monkeypatch):
  """A stand-in for a prepared TFDS glue/mnli (no download): TFDS orders MNLI's labels
  entailment, neutral, contradiction; ours are sorted, so labels go by name."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rows = [{'premise': b'the cat sat', 'hypothesis': b'a cat ran', 'label': 2, 'idx': 5}]

  class FakeBuilder:
    data_dir = '/nowhere'
    info = type('Info', (), {'features': {'label': type('L', (), {
        'names': ['entailment', 'neutral', 'contradiction']})()}})()

    def as_dataset(self, split):
      assert split == 'validation_matched'
      return rows

  monkeypatch.setattr(tfds, 'builder', lambda name, data_dir=None: FakeBuilder())
  monkeypatch.setattr(tfds, 'as_numpy', lambda dataset: dataset)
  examples = classification.read_glue_tfds(classification.GLUE['mnli'], 'dev_matched', None)
  assert examples == [{'id': '5', 'text_a': 'the cat sat', 'text_b': 'a cat ran',
                       'label': 'contradiction'}]


def test_train_batches_are_a_function_of_seed_and_step():
  arrays = {'input_ids': np.arange(10)[:, None], 'weight': np.ones(10)}
  epoch_0 = np.concatenate([loop.train_batch(arrays, s, 4, 0)['input_ids'][:, 0] for s in (0, 1)])
  assert len(set(epoch_0.tolist())) == 8  # 2 batches of 4 per epoch, no repeats, 2 dropped
  np.testing.assert_array_equal(loop.train_batch(arrays, 3, 4, 0)['input_ids'],
                                loop.train_batch(arrays, 3, 4, 0)['input_ids'])
  assert not np.array_equal(loop.train_batch(arrays, 0, 4, 0)['input_ids'],
                            loop.train_batch(arrays, 0, 4, 1)['input_ids'])


def test_cli_bad_input_is_one_error_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, '-m', 'electra_jax.main', '--config=configs/finetune.py',
       '--config.task=mnli', f'--workdir={tmp_path}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'error: set --config.data_dir to the folder holding the mnli data')


def test_finetuning_does_not_load_the_pretraining_loop():
  """finetune/loop.py shares the train state and its non-finite guard (train_state.py), not
  train.py: importing it loads neither train.py nor what only pre-training needs."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys; import electra_jax.finetune.loop; '
          'print(sorted(m for m in ("electra_jax.train", "electra_jax.train_state") '
          'if m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "['electra_jax.train_state']"


def test_pretraining_keys_are_unknown_keys_of_the_finetuning_config(tmp_path):
  """configs/finetune.py holds only what fine-tuning, score and zeroshot read: overriding a
  pre-training key is the command line's unknown-key error, not silently ignored."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  c = finetune_config()
  assert 'objective' not in c and 'corpus' not in c.data and 'warmup_steps' not in c.optim
  assert not {'generator_fraction', 'untied_generator', 'embedding_sharing'} & set(c.model)
  for override, key in (('objective.mask_prob=0.2', 'objective'), ('data.corpus=a.txt', 'corpus'),
                        ('optim.warmup_steps=5', 'warmup_steps'),
                        ('model.generator_fraction=1.0', 'generator_fraction'),
                        ('grad_accum_steps=2', 'grad_accum_steps'),
                        ('model.untied_generator=False', 'untied_generator')):
    result = subprocess.run(
        [sys.executable, '-m', 'electra_jax.main', '--config=configs/finetune.py',
         f'--config.{override}', f'--workdir={tmp_path}'],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS='cpu'))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: unknown config key '{key}' "), result.stderr[-2000:]
  assert os.listdir(tmp_path) == []


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
  config = finetune_config(task='sst', num_train_steps=8, eval_every_steps=2, log_every_steps=1,
                           **{'optim.learning_rate': 2e-3})
  straight = loop.run(config, str(tmp_path / 'straight'))
  real_batch = loop.train_batch

  def crashing_batch(arrays, step, *args):
    if step == 5:
      raise RuntimeError('simulated crash at step 5')
    return real_batch(arrays, step, *args)
  monkeypatch.setattr(loop, 'train_batch', crashing_batch)
  with pytest.raises(RuntimeError, match='simulated crash'):
    loop.run(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(loop, 'train_batch', real_batch)
  resumed = loop.run(config, str(tmp_path / 'resumed'))  # from the step-4 checkpoint

  def rows(name):
    with open(os.path.join(tmp_path, name, 'seed_0', 'metrics.jsonl')) as f:
      return [(r['kind'], r['step'], r.get('loss', r.get('dev/accuracy')))
              for r in map(json.loads, f) if r['kind'] != 'info']
  assert rows('resumed') == rows('straight')  # bit for bit, each step once
  assert resumed['seeds'][0]['best'] == straight['seeds'][0]['best']
  assert resumed['seeds'][0]['best_step'] == straight['seeds'][0]['best_step']

  # A real SIGINT (Ctrl-C, to this process) during step 5: the run evaluates and saves step 6,
  # returns, and the same call resumes to the same rows and results.
  def signalling_batch(arrays, step, *args):
    if step == 5:
      os.kill(os.getpid(), signal.SIGINT)
    return real_batch(arrays, step, *args)
  monkeypatch.setattr(loop, 'train_batch', signalling_batch)
  handler = signal.getsignal(signal.SIGINT)
  stopped = loop.run(config, str(tmp_path / 'signalled'))
  assert stopped['stopped'] == 'SIGINT' and 'median' not in stopped
  assert signal.getsignal(signal.SIGINT) is handler  # the run's handler is gone again
  monkeypatch.setattr(loop, 'train_batch', real_batch)
  resumed = loop.run(config, str(tmp_path / 'signalled'))
  assert rows('signalled') == rows('straight')
  assert resumed['seeds'][0]['best'] == straight['seeds'][0]['best']


def test_best_dev_checkpoint_is_the_earliest_of_equal_scores(tmp_path, monkeypatch):
  """Dev scores 50, NaN, 80, 80 at steps 2, 4, 6, 8: the best is step 6 (a later eval must beat it;
  a NaN beats nothing). orbax keeps it besides the latest (keep_checkpoints=1) and its weights,
  restored once the last save is written, make the predictions."""
  scores = iter([50.0, float('nan'), 80.0, 80.0])
  real_evaluate = classification.ClassificationTask.evaluate
  monkeypatch.setattr(classification.ClassificationTask, 'evaluate',
                      lambda self, split, p: dict(real_evaluate(self, split, p), score=next(scores)))
  restored, real_restore = [], checkpoint.restore
  monkeypatch.setattr(checkpoint, 'restore',
                      lambda manager, step, like: restored.append(step) or real_restore(
                          manager, step, like))
  closed, real_close = [], ocp.CheckpointManager.close
  monkeypatch.setattr(ocp.CheckpointManager, 'close',
                      lambda manager: closed.append(manager) or real_close(manager))
  config = finetune_config(task='sst', num_train_steps=8, eval_every_steps=2, keep_checkpoints=1,
                           async_checkpoints=True, **{'optim.learning_rate': 2e-3})
  workdir = str(tmp_path / 'ft')
  results = loop.run(config, workdir)
  seed = results['seeds'][0]
  assert (seed['best_step'], seed['best']['dev']['score']) == (6, 80.0)
  assert restored == [6] and len(closed) == 1
  assert sorted(os.listdir(os.path.join(workdir, 'seed_0', 'checkpoints'))) == ['6', '8']
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['seeds'][0]['best_step'] == 6
  assert not {'best.json', 'best.msgpack'} & set(os.listdir(os.path.join(workdir, 'seed_0')))


def test_custom_labels_file_and_metrics(tmp_path):
  (tmp_path / 'train.tsv').write_text('text\tlabel\ngood cat\tpos\nbad dog\tneg\n')
  (tmp_path / 'labels.txt').write_text('pos\nneg\nmixed\n')
  tokenizer = tokenization.load_tokenizer(VOCAB)
  config = finetune_config(task='custom', **{'custom.train_file': str(tmp_path / 'train.tsv'),
                                             'custom.labels_file': str(tmp_path / 'labels.txt')})
  task = classification.ClassificationTask(config, tokenizer)
  assert task.labels == ('pos', 'neg', 'mixed') and task.num_outputs == 3
  np.testing.assert_array_equal(task.train['label'], [0, 1])
  assert task.metric_names == ('accuracy',) and task.eval_sets == {}
  config.custom.metrics = 'accuracy,bogus'
  with pytest.raises(UserError, match="unknown metric 'bogus'"):
    classification.ClassificationTask(config, tokenizer)


def test_losses_are_summed_over_the_batch_as_the_original():
  """The original sums per-example losses (tagging: per labeled token) before the clip at 1.0;
  'mean' averages them. Padding examples (weight 0) count in neither."""
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
  batch = {'label': jnp.array([0, 0, 1]), 'weight': jnp.array([1.0, 1.0, 0.0])}
  per_example = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0))]
  outputs = {'logits': logits}
  np.testing.assert_allclose(ft_model.loss_fn('classification', outputs, batch),
                             sum(per_example), rtol=1e-6)
  np.testing.assert_allclose(ft_model.loss_fn('classification', outputs, batch, reduction='mean'),
                             sum(per_example) / 2, rtol=1e-6)
  np.testing.assert_allclose(
      ft_model.loss_fn('regression', {'logits': jnp.array([1.0, 2.0, 9.0])},
                       {'label': jnp.array([0.5, 0.0, 0.0]), 'weight': jnp.array([1., 1., 0.])}),
      0.25 + 4.0, rtol=1e-6)
  tag_batch = {'labels': jnp.array([[0, 1], [1, 1]]), 'label_weights': jnp.array([[1., 1.], [1., 0.]]),
               'weight': jnp.array([1.0, 1.0])}
  tag_logits = jnp.zeros((2, 2, 2))  # every token's loss is log 2
  np.testing.assert_allclose(ft_model.loss_fn('tagging', {'logits': tag_logits}, tag_batch),
                             3 * math.log(2.0), rtol=1e-6)
  np.testing.assert_allclose(
      ft_model.loss_fn('tagging', {'logits': tag_logits}, tag_batch, reduction='mean'),
      math.log(2.0), rtol=1e-6)


def test_steps_and_fractional_warmup_as_the_original():
  config = finetune_config(batch_size=32, num_train_epochs=3.0)
  assert loop.train_steps(config, 127, task_epochs=3.0) == 9  # 127 // 32 x 3 (not int(11.9))
  assert loop.train_steps(finetune_config(batch_size=32, num_train_epochs=0.0), 127, 2.5) == 7
  assert loop.train_steps(finetune_config(num_train_steps=5), 127, 3.0) == 5
  lr = loop.finetune_schedule(finetune_config(**{'optim.learning_rate': 1.0}), 9)
  # warmup 0.9 steps (a float), overlapping the linear decay from step 0
  np.testing.assert_allclose([float(lr(s)) for s in (0, 1, 4, 9)],
                             [0.0, 8 / 9, 5 / 9, 0.0], rtol=1e-6, atol=1e-7)
  lr = loop.finetune_schedule(finetune_config(**{'optim.learning_rate': 1.0}), 30)
  np.testing.assert_allclose(float(lr(2)), (2 / 3) * (28 / 30), rtol=1e-6)  # warmup 3.0


def test_heads_are_glorot_uniform_as_tf_layers_dense():
  config = finetune_config()
  for head, num, names in (('classification', 3, ['classifier']), ('tagging', 5, ['tagger']),
                           ('qa', 1, ['qa_start', 'qa_hidden', 'answer_class'])):
    params = ft_model.init_params(ft_model.make_model(config.model, head, num, config),
                                  jax.random.key(0))
    for name in names:
      kernel = np.asarray(params[name]['kernel'])
      limit = math.sqrt(6.0 / sum(kernel.shape))
      assert limit * 0.5 < np.abs(kernel).max() <= limit, name


def test_probe_head_init_fine_tunes_from_the_head_fit_on_frozen_features(pretrained_workdir,
                                                                         tmp_path, capsys):
  """head_init='probe': before step 1 the head is fit on the encoder's [CLS] vectors of the train
  set; one step at the warmup's lr 0 keeps it, so the run's dev accuracy is the probe's."""
  def run(head_init, **overrides):
    config = finetune_config(task='sst', init_checkpoint=pretrained_workdir, num_train_steps=1,
                             head_init=head_init, predict_test=False, **overrides)
    return loop.run(config, str(tmp_path / head_init))
  probed = run('probe')['median']['dev']['accuracy']
  line = [l for l in capsys.readouterr().out.splitlines() if 'frozen [CLS] features' in l]
  assert len(line) == 1 and f'dev accuracy {probed:.2f}' in line[0], line
  assert probed > 65 > run('random')['median']['dev']['accuracy'], probed  # majority class: 56%
  # probe_only: that probe is the result, with no step taken, also where a fine-tuned checkpoint
  # (the 1-step run's) lies in the workdir.
  only = run('probe', probe_only=True)
  assert only['median']['dev']['accuracy'] == probed
  assert (only['seeds'][0]['num_train_steps'], only['seeds'][0]['best_step']) == (0, 0)
  with pytest.raises(UserError, match='^probe_only fits a classification or regression head; '
                                      'chunk has a tagging head$'):
    loop.run(finetune_config(task='chunk', data_dir=os.path.join(FIXTURES, 'chunk'),
                             probe_only=True), str(tmp_path / 'chunk_probe_only'))
  with pytest.raises(UserError, match="head_init='probe' fits a classification or regression "
                                      'head; chunk has a tagging head'):
    loop.run(finetune_config(task='chunk', data_dir=os.path.join(FIXTURES, 'chunk'),
                             head_init='probe'), str(tmp_path / 'chunk'))
