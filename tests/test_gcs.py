"""Everything on gs://, against a local GCS emulator (tests/gcs_emulator.py): build data, pre-train,
resume after a crash, export, fine-tune a custom task, convert to HF and back; paths.py itself.

Not skipped when the emulator is missing: `pip install -e .[test]` installs gcp-storage-emulator.
"""
import json
import os
import random

import gcp_storage_emulator  # pylint: disable=unused-import  (missing: fail, never skip)
import numpy as np
import pytest

import gcs_emulator
from conftest import tiny_config
from electra_jax import build_data
from electra_jax import checkpoint
from electra_jax import convert
from electra_jax import input_pipeline
from electra_jax import paths
from electra_jax import tokenization
from electra_jax import train
from electra_jax.finetune import loop
from test_finetune_classification import finetune_config
from test_train import VOCAB, config_for

BUCKET = 'gs://test'


@pytest.fixture(scope='module')
def gcs():
  """A fresh emulator for this module; every GCS client pointed at it through os.environ."""
  process, env = gcs_emulator.start()
  with pytest.MonkeyPatch.context() as mp:
    for name, value in env.items():
      mp.setenv(name, value)
    try:
      yield BUCKET
    finally:
      process.kill()
      process.wait()


def _write(path, text):
  with paths.open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def _read_jsonl(path):
  with paths.open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def test_paths_on_gcs(gcs, tmp_path):
  root = f'{gcs}/paths'
  assert paths.abspath(root) == root and paths.dirname(f'{root}/a.txt') == root
  paths.makedirs(f'{root}/d')
  _write(f'{root}/d/a.txt', 'x\ny\n')
  with paths.open(f'{root}/d/a.txt', encoding='utf-8', newline='') as f:
    assert f.read() == 'x\ny\n'
  with paths.open(f'{root}/d/a.txt', 'a') as f:
    f.write('z\n')
  with paths.open(f'{root}/d/a.txt', 'rb') as f:
    assert list(f) == [b'x\n', b'y\n', b'z\n']
  assert paths.isfile(f'{root}/d/a.txt') and paths.isdir(f'{root}/d')
  assert not paths.isfile(f'{root}/d') and not paths.exists(f'{root}/none')
  assert paths.glob(f'{root}/*/*.txt') == [f'{root}/d/a.txt'] and paths.listdir(root) == ['d']
  assert paths.stat(f'{root}/d/a.txt')[0] == 6
  paths.replace(f'{root}/d/a.txt', f'{root}/d/b.txt')
  paths.rename(f'{root}/d', f'{root}/e')  # a folder: object by object
  assert paths.listdir(f'{root}/e') == ['b.txt'] and not paths.exists(f'{root}/d')
  with paths.local_copy(f'{root}/e/b.txt') as local:
    assert open(local, encoding='utf-8').read() == 'x\ny\nz\n'
  with paths.local_output(f'{root}/out.bin') as local:
    with open(local, 'wb') as f:
      f.write(b'\x00\x01')
  assert paths.open(f'{root}/out.bin', 'rb').read() == b'\x00\x01'
  paths.rmtree(root)
  assert not paths.exists(root)
  # Local paths stay local (and relative ones absolute, as os.path has it).
  assert paths.abspath('a') == os.path.abspath('a') and not paths.is_url(str(tmp_path))


def test_sentencepiece_trains_into_and_loads_from_gcs(gcs):
  rng = random.Random(0)
  _write(f'{gcs}/spm/text.txt', ''.join(
      ' '.join(rng.choice(VOCAB[6:]) for _ in range(8)) + '.\n' for _ in range(300)))
  model = tokenization.train_sentencepiece([f'{gcs}/spm/text.txt'], f'{gcs}/spm/out/spm', 40,
                                           do_lower_case=True)
  assert model == f'{gcs}/spm/out/spm.model' and paths.isfile(f'{gcs}/spm/out/spm.vocab')
  tok = tokenization.load_tokenizer(model)
  assert tok.vocab_size == 40 and tok.mask_id == 4 and tok.path == model


def test_pipeline_on_gcs(gcs, monkeypatch):
  """build data -> pre-train (crash, resume) -> pretrained/ -> fine-tune -> HF -> back."""
  rng = random.Random(0)
  docs = ['\n'.join(
      f'the {rng.choice(["big", "small"])} {rng.choice(["cat", "dog"])} '
      f'{rng.choice(["sat", "ran"])} on the {rng.choice(["mat", "log"])}.'
      for _ in range(rng.randint(2, 5))) for _ in range(40)]
  _write(f'{gcs}/corpus/part-0.txt', '\n\n'.join(docs[:20]) + '\n')
  _write(f'{gcs}/corpus/part-1.txt', '\n\n'.join(docs[20:]) + '\n')
  _write(f'{gcs}/vocab.txt', '\n'.join(VOCAB) + '\n')
  workdir = f'{gcs}/work'
  config = config_for(f'{gcs}/data', num_train_steps=6, checkpoint_every_steps=3,
                      eval_every_steps=3)
  config.data.corpus = f'{gcs}/corpus/*.txt'  # a glob on GCS
  config.data.vocab = f'{gcs}/vocab.txt'

  data_dir = build_data.build_pretraining_data(config, workdir)
  meta = build_data.load_meta(data_dir)
  assert data_dir == f'{gcs}/data' and meta.vocab_path == f'{gcs}/vocab.txt'
  assert all(f.startswith(f'{gcs}/data/') for f in meta.train_files + meta.eval_files)

  real_batches = input_pipeline.train_batches

  def crashing_batches(*args, **kwargs):
    for i, batch in enumerate(real_batches(*args, **kwargs)):
      if i == 4:
        raise RuntimeError('simulated crash at step 4')
      yield batch
  monkeypatch.setattr(input_pipeline, 'train_batches', crashing_batches)
  with pytest.raises(RuntimeError, match='simulated crash'):
    train.train_and_evaluate(config, workdir)
  assert paths.isdir(f'{workdir}/checkpoints/3')
  monkeypatch.setattr(input_pipeline, 'train_batches', real_batches)
  result = train.train_and_evaluate(config, workdir)  # resumes from step 3
  assert result['step'] == 6
  rows = [r for r in _read_jsonl(f'{workdir}/metrics.jsonl') if r['kind'] == 'train']
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert paths.listdir(f'{workdir}/tensorboard') and paths.isfile(f'{workdir}/config.json')
  with paths.open(f'{workdir}/lock') as f:
    assert f.read() == ''  # released
  _, weights, vocab = checkpoint.load_pretrained(f'{workdir}/pretrained')
  assert vocab['vocab_path'] == f'{gcs}/vocab.txt'

  # Fine-tuning a custom JSONL task on GCS from the GCS workdir's pretrained/ weights.
  for split, n in (('train', 16), ('dev', 8)):
    _write(f'{gcs}/task/{split}.jsonl', ''.join(
        json.dumps({'text': ' '.join(rng.choice(['cat', 'dog']) for _ in range(4)),
                    'label': rng.choice(['a', 'b'])}) + '\n' for _ in range(n)))
  ft = finetune_config(task='custom', init_checkpoint=workdir, num_train_steps=4,
                       eval_every_steps=4, **{'custom.train_file': f'{gcs}/task/train.jsonl',
                                              'custom.dev_file': f'{gcs}/task/dev.jsonl'})
  tiny = tiny_config(vocab_size=len(VOCAB)).model
  for key in ft.model:  # fine-tuning's model keys, of the pre-trained model
    ft.model[key] = tiny[key]
  ft.data.vocab = ''  # the one recorded with the weights (on GCS)
  results = loop.run(ft, f'{gcs}/ft')
  with paths.open(f'{gcs}/ft/results.json') as f:
    assert json.load(f)['median'] == results['median']
  assert paths.isfile(f'{gcs}/ft/seed_0/metrics.jsonl')

  # convert.py: the workdir to HF on GCS, and back.
  written = convert.convert('electra_jax', 'hf', workdir, f'{gcs}/hf')
  assert written == [f'{gcs}/hf/discriminator', f'{gcs}/hf/generator']
  assert paths.isfile(f'{gcs}/hf/discriminator/model.safetensors')
  assert paths.isfile(f'{gcs}/hf/discriminator/vocab.txt')
  convert.convert('hf', 'electra_jax', f'{gcs}/hf', f'{gcs}/back')
  _, back, _ = checkpoint.load_pretrained(f'{gcs}/back')
  for a, b in zip(_leaves(weights['discriminator']), _leaves(back['discriminator'])):
    np.testing.assert_array_equal(a, b)


def _leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)
