"""The discriminator as a tool (score.py): per-token P(replaced), text scores, zero-shot."""
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import tiny_config
from electra_jax import checkpoint
from electra_jax import model as model_lib
from electra_jax import score
from electra_jax.errors import UserError
from test_finetune_classification import VOCAB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ['the cat sat on the mat .', 'a big red dog ran under the log', 'paris is the capital of '
         'france', 'it was good']


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """Tiny random ELECTRA weights exported as pretrained/ (the head's output is not trivial)."""
  directory = str(tmp_path_factory.mktemp('score') / 'pretrained')
  config = tiny_config(vocab_size=len(open(VOCAB).read().split()))
  params = model_lib.init_params(model_lib.make_pretrainer(config), jax.random.key(7))
  checkpoint.export_pretrained(directory, params, config, {'vocab_path': VOCAB,
                                                           'do_lower_case': True})
  return directory


def test_token_scores_are_the_discriminator_s_probabilities(model_dir):
  scorer = score.load(model_dir, max_seq_length=16, batch_size=2)
  rows = score.token_scores(TEXTS, scorer)
  m, weights, _ = checkpoint.load_pretrained(model_dir)
  model = model_lib.ElectraPretrainer(m)
  for text, row in zip(TEXTS, rows):
    ids = [scorer.tokenizer.cls_id] + scorer.tokenizer.encode(text) + [scorer.tokenizer.sep_id]
    assert row['tokens'] == [scorer.tokenizer.id_to_token(i) for i in ids[1:-1]]
    logits = model.apply({'params': weights['discriminator']}, np.array([ids]),
                         np.ones((1, len(ids)), np.int32), np.zeros((1, len(ids)), np.int32),
                         method='discriminator_logits')
    expected = 1 / (1 + np.exp(-np.asarray(logits[0, 1:-1], np.float64)))
    np.testing.assert_allclose(row['p_replaced'], expected, atol=2e-6)
    assert math.isclose(row['score'], float(np.mean(np.log(1 - expected))), abs_tol=1e-5)
    assert not row['truncated']
  # Batching (other texts, other padding) does not change a text's numbers; long texts are cut.
  alone = score.token_scores([TEXTS[2]], scorer)[0]
  np.testing.assert_allclose(alone['p_replaced'], rows[2]['p_replaced'], atol=2e-6)
  long = score.token_scores([' '.join(['cat'] * 40)], scorer)[0]
  assert long['truncated'] and len(long['tokens']) == 14


def test_zeroshot_picks_the_least_replaced_label_word(model_dir, monkeypatch):
  scorer = score.load(model_dir, max_seq_length=16)
  ids, span = score.prompt_ids(scorer, '{text} it was {label} .', 'the cat sat', None, 'good')
  tok = scorer.tokenizer
  assert [ids[i] for i in span] == tok.encode('good')
  assert ids == [tok.cls_id] + tok.encode('the cat sat it was good .') + [tok.sep_id]
  # A text too long for the prompt is cut at its end; the label word stays whole.
  ids, span = score.prompt_ids(scorer, '{text} it was {label} .', ' '.join(['dog'] * 30), None,
                               'bad')
  assert len(ids) <= 16 and [ids[i] for i in span] == tok.encode('bad')

  # With P(replaced) fixed per token id, the label whose word has the lowest mean wins.
  good, bad = tok.encode('good')[0], tok.encode('bad')[0]
  fixed = lambda lists: [np.where(np.array(l) == good, 0.2, np.where(np.array(l) == bad, 0.7, 0.5))
                         for l in lists]
  monkeypatch.setattr(score.Scorer, 'probabilities', lambda self, lists: fixed(lists))
  out = score.zeroshot(scorer, [{'text_a': 'the cat', 'text_b': None}],
                       '{text} it was {label} .', {'pos': 'good', 'neg': 'bad'})
  assert out == [{'p_replaced': {'pos': 0.2, 'neg': 0.7}, 'prediction': 'pos'}]
  with pytest.raises(UserError, match='label:word'):
    score.parse_label_words('pos=good,neg:bad')


def test_score_and_zeroshot_modes(model_dir, tmp_path):
  (tmp_path / 'texts.txt').write_text('\n'.join(TEXTS) + '\n')
  dev = tmp_path / 'dev.jsonl'
  dev.write_text(''.join(json.dumps({'sentence': t, 'label': l}) + '\n'
                         for t, l in zip(TEXTS, ['1', '0', '1', '1'])))
  common = [sys.executable, '-m', 'electra_jax.main', '--config=configs/finetune.py',
            f'--config.init_checkpoint={model_dir}', '--config.max_seq_length=16']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run = subprocess.run(common + ['--mode=score', f'--config.score.input={tmp_path}/texts.txt',
                                 f'--workdir={tmp_path}/s'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  rows = [json.loads(l) for l in open(tmp_path / 's' / 'scores.jsonl')]
  assert [r['text'] for r in rows] == TEXTS and all(0 < p < 1 for r in rows
                                                     for p in r['p_replaced'])
  run = subprocess.run(common + ['--mode=zeroshot', f'--config.custom.dev_file={dev}',
                                 '--config.custom.text_a=sentence',
                                 '--config.zeroshot.label_words=1:good,0:bad',
                                 f'--workdir={tmp_path}/z'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  results = json.load(open(tmp_path / 'z' / 'results.json'))
  assert results['num_examples'] == 4 and results['majority_accuracy'] == 75.0
  predictions = [json.loads(l) for l in open(tmp_path / 'z' / 'predictions.jsonl')]
  assert results['accuracy'] == 100.0 * np.mean([p['prediction'] == p['label']
                                                  for p in predictions])
  run = subprocess.run(common + ['--mode=zeroshot', f'--config.custom.dev_file={dev}',
                                 '--config.custom.text_a=sentence',
                                 '--config.zeroshot.label_words=1:good',
                                 f'--workdir={tmp_path}/z2'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 1 and run.stderr.strip().splitlines()[-1].startswith('error: ')
