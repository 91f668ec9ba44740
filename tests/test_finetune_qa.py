"""Extractive QA: windows with doc stride, answer token labels that map back to the exact original
characters, n-best decoding across windows (max-context rule), SQuAD 2.0 outputs, a tiny run."""
import json
import os
import types

import numpy as np
import pytest

from electra_jax import tokenization
from electra_jax.errors import UserError
from electra_jax.finetune import loop
from electra_jax.finetune import qa
from test_finetune_classification import VOCAB, finetune_config

CONTEXT = 'the cat sat on the mat. The Capital of FRANCE is Paris, it was big.'
# tokens: the(0) cat sat on the mat .(6) the(7) capital(8) of france(10) is paris(12) , it was big .(17)
QUESTION = 'what is the capital of france?'  # 7 tokens


def write_squad(path, questions):
  data = {'version': 'v2.0', 'data': [{'title': 't', 'paragraphs': [
      {'context': CONTEXT, 'qas': questions}]}]}
  path.write_text(json.dumps(data))


def paris(qid='q1'):
  return {'id': qid, 'question': QUESTION, 'is_impossible': False,
          'answers': [{'text': 'Paris', 'answer_start': CONTEXT.index('Paris')}]}


def unanswerable(qid='q2'):
  return {'id': qid, 'question': 'who sat on the log?', 'is_impossible': True, 'answers': []}


@pytest.fixture
def squad_dir(tmp_path):
  write_squad(tmp_path / 'train-v2.0.json', [paris(), unanswerable()])
  write_squad(tmp_path / 'dev-v2.0.json', [paris(), unanswerable()])
  return tmp_path


def test_window_rules():
  assert qa.window_starts(10, 4, 2) == [0, 2, 4, 6]
  assert qa.window_starts(4, 4, 2) == [0]
  best = qa.max_context_windows(10, [0, 2, 4, 6], 4)
  assert best[3] == 1 and best[0] == 0 and best[9] == 3  # token 3: min(1, 2) in window 1


def test_training_windows_map_back_to_exact_characters(squad_dir):
  config = finetune_config(task='squad2', data_dir=str(squad_dir), max_seq_length=16,
                           **{'qa.doc_stride': 3})
  task = qa.QATask(config, tokenization.load_tokenizer(VOCAB))
  windows = task.windows['train']
  assert [w['start'] for w in windows if w['question'] == 0] == [0, 3, 6, 9, 12]  # 6-token windows
  offsets = task.offsets['train'][0]
  answered = 0
  for i, w in enumerate(windows):
    start, end = task.train['start_position'][i], task.train['end_position'][i]
    if w['question'] == 1 or not 9 <= w['start'] <= 12:  # unanswerable, or 'paris' not inside
      assert start == end == 0 and task.train['answerable'][i] == 0
      continue
    answered += 1
    first, last = w['start'] + start - w['offset'], w['start'] + end - w['offset']
    assert CONTEXT[offsets[first][0]:offsets[last][1]] == 'Paris'
    assert task.train['context_mask'][i][start] == 1 and task.train['answerable'][i] == 1
  assert answered == 2


def test_decoding_across_windows_uses_max_context(squad_dir):
  config = finetune_config(task='squad2', data_dir=str(squad_dir), max_seq_length=16,
                           **{'qa.doc_stride': 3, 'qa.na_threshold': 0.5})
  task = qa.QATask(config, tokenization.load_tokenizer(VOCAB))
  windows = task.windows['dev']
  n = len(windows)
  predictions = {'start_logits': np.full((n, 16), -10.0), 'end_logits': np.full((n, 16), -10.0),
                 'answerable_logit': np.full(n, -5.0)}
  for i, w in enumerate(windows):
    if w['question'] != 0:
      continue
    if w['start'] == 6:  # 'capital'(8) .. 'france'(10): this window holds token 8 best
      predictions['start_logits'][i][w['offset'] + 2] = 5.0
      predictions['end_logits'][i][w['offset'] + 4] = 5.0
      predictions['answerable_logit'][i] = 3.0
    if w['start'] == 3:  # a higher score at token 8, but token 8 is at this window's edge
      predictions['start_logits'][i][w['offset'] + 5] = 9.0
      predictions['end_logits'][i][w['offset'] + 5] = 9.0
  answers, na_probs = task.decode('dev', predictions)
  assert answers['q1'] == 'Capital of FRANCE'  # the original characters, across windows
  assert na_probs['q1'] == pytest.approx(1 - 1 / (1 + np.exp(-3.0)))
  assert na_probs['q2'] > 0.5 and task.final_answers(answers, na_probs)['q2'] == ''
  result = task.evaluate('dev', predictions)
  assert result['exact'] == 50.0 and result['NoAns_exact'] == 100.0
  written = task.write_eval_predictions('dev', predictions, str(squad_dir / 'out'))
  assert json.load(open(written[0])) == {'q1': 'Capital of FRANCE', 'q2': ''}
  assert set(json.load(open(written[1]))) == {'q1', 'q2'}


def test_joint_beam_decoding(squad_dir):
  """The joint head's beam: (start, end) pairs scored by log-probability sums."""
  config = finetune_config(task='squad1', data_dir=str(squad_dir), max_seq_length=32)
  write_squad(squad_dir / 'train-v1.1.json', [paris()])
  write_squad(squad_dir / 'dev-v1.1.json', [paris()])
  task = qa.QATask(config, tokenization.load_tokenizer(VOCAB))
  assert len(task.windows['dev']) == 1  # the context fits one window
  w = task.windows['dev'][0]
  o = w['offset']
  beam = {'start_top_index': np.array([[0, o + 12, o + 8]]),  # [CLS] is never an answer
          'start_top_log_probs': np.array([[-0.1, -1.0, -2.0]]),
          'end_top_index': np.array([[[0, 0, 0], [o + 12, o + 10, o + 13], [o + 10, o + 9, 0]]]),
          'end_top_log_probs': np.array([[[-0.1, -0.2, -0.3], [-1.5, -0.1, -2.0],
                                          [-0.1, -0.2, -0.3]]]),
          'answerable_logit': np.zeros(1)}
  answers, _ = task.decode('dev', beam)
  # start 12 ends before it at 10 (invalid); start 12 + end 12 = -2.5 < start 8 + end 10 = -2.1.
  assert answers['q1'] == 'Capital of FRANCE'
  assert task.final_answers(answers, {'q1': 0.9}) == answers  # v1.1: never ''
  assert task.evaluate('dev', beam) == {'exact': 0.0, 'f1': 0.0, 'score': 0.0}  # gold: Paris
  beam['end_top_log_probs'][0, 1, 0] = -0.5  # now start 12 + end 12 ('Paris') = -1.5 wins
  assert task.decode('dev', beam)[0] == {'q1': 'Paris'}
  assert task.evaluate('dev', beam)['exact'] == 100.0


def test_joint_head_beam_matches_gold_start_logits():
  """Inference end logits for a beam start equal training end logits given that start."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from electra_jax.finetune import model as ft_model  # pylint: disable=g-import-not-at-top
  model = ft_model.FinetuneModel(tiny_config().model, 'qa', qa_beam=3)
  ids = jnp.array([[2, 10, 3, 11, 12, 13, 14, 3]])
  mask, segments = jnp.ones_like(ids), jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]])
  params = model.init(jax.random.key(0), ids, mask, segments)['params']
  beam = model.apply({'params': params}, ids, mask, segments)
  assert beam['start_top_index'].shape == (1, 3) and beam['end_top_index'].shape == (1, 3, 3)
  for k in range(3):
    start = beam['start_top_index'][:, k]
    given = model.apply({'params': params}, ids, mask, segments, start_positions=start)
    log_probs = jax.nn.log_softmax(given['end_logits'])[0]
    np.testing.assert_allclose(beam['end_top_log_probs'][0, k],
                               log_probs[beam['end_top_index'][0, k]], rtol=1e-5, atol=1e-5)
  # Question tokens (segment 0) other than [CLS] are never starts.
  assert not set(np.asarray(beam['start_top_index'][0]).tolist()) & {1, 2}


def test_sentencepiece_is_refused():
  with pytest.raises(UserError, match='WordPiece'):
    qa.encode_with_offsets(types.SimpleNamespace(kind='sentencepiece'), 'text')


@pytest.mark.parametrize('joint', [True, False])
def test_squad_run_end_to_end(squad_dir, tmp_path, joint):
  """Random init, a few steps: the loop runs and writes the official-format outputs."""
  config = finetune_config(task='squad2', data_dir=str(squad_dir), max_seq_length=24,
                           batch_size=4, eval_batch_size=4, num_train_steps=4,
                           **{'qa.joint_prediction': joint})
  results = loop.run(config, str(tmp_path / 'ft'))
  dev = results['median']['dev']
  assert {'exact', 'f1', 'best_f1', 'HasAns_exact', 'NoAns_exact'} <= set(dev)
  predictions = json.load(open(os.path.join(tmp_path, 'ft', 'seed_0', 'predictions',
                                            'predictions.json')))
  assert set(predictions) == {'q1', 'q2'}
  assert all(p == '' or p in CONTEXT for p in predictions.values())


def test_mrqa_jsonl(tmp_path):
  start = CONTEXT.index('Paris')
  record = {'context': CONTEXT, 'qas': [{
      'qid': 'm1', 'question': QUESTION, 'answers': ['Paris', 'paris city'],
      'detected_answers': [{'text': 'paris', 'char_spans': [[start, start + 4]]}]}]}
  for split in ('train', 'dev'):
    (tmp_path / f'{split}.jsonl').write_text(
        json.dumps({'header': {'dataset': 'toy'}}) + '\n' + json.dumps(record) + '\n')
  questions = qa.read_mrqa(str(tmp_path / 'train.jsonl'))
  assert questions[0]['answers'] == [{'text': 'Paris', 'answer_start': start}]  # inclusive end
  assert questions[0]['gold'] == ['Paris', 'paris city']
  config = finetune_config(task='mrqa_toy', data_dir=str(tmp_path), max_seq_length=32)
  task = qa.QATask(config, tokenization.load_tokenizer(VOCAB))
  o = task.windows['train'][0]['offset']
  assert (task.train['start_position'][0], task.train['end_position'][0]) == (o + 12, o + 12)
  logits = np.full((1, 32), -10.0)
  logits[0, o + 12] = 5.0
  predictions = {'start_logits': logits, 'end_logits': logits, 'answerable_logit': np.zeros(1)}
  assert task.evaluate('dev', predictions) == {'exact': 100.0, 'f1': 100.0, 'score': 100.0}
