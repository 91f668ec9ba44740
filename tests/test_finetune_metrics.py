"""Fine-tuning metrics against hand-computed values (GLUE, conlleval, the official SQuAD scripts)."""
import math

import pytest

from electra_jax.finetune import metrics


def test_classification_metrics_by_hand():
  assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
  # tp 2, fp 1, fn 1, tn 1: F1 = 2*2 / (2*2 + 1 + 1); MCC = (2*1 - 1*1) / sqrt(3*3*2*2).
  labels, predictions = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]
  assert metrics.f1_binary(labels, predictions) == pytest.approx(100 * 4 / 6)
  assert metrics.matthews_corrcoef(labels, predictions) == pytest.approx(100 / 6)
  assert metrics.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(100.0)
  assert metrics.matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # undefined -> 0 (sklearn)
  assert metrics.f1_binary([0, 0], [0, 0]) == 0.0


def test_correlations_by_hand():
  # x=[1,2,3], y=[1,2,4]: cov sum 3, |dx| sqrt(2), |dy| sqrt(42/9) -> r = 9 / sqrt(84).
  assert metrics.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(100 * 9 / math.sqrt(84))
  assert metrics.spearman([1, 2, 3], [1, 2, 4]) == pytest.approx(100.0)
  # Ties get the average rank: ranks [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] -> 4.5 / sqrt(4.5 * 5).
  assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(100 * 4.5 / math.sqrt(22.5))
  assert metrics.pearson([1, 1, 1], [1, 2, 3]) == 0.0


def test_conlleval_chunks_bio():
  assert metrics.chunks(['B-NP', 'I-NP', 'O', 'B-VP']) == [(0, 1, 'NP'), (3, 3, 'VP')]
  assert metrics.chunks(['I-NP', 'I-NP', 'O']) == [(0, 1, 'NP')]  # I- after O starts a chunk
  assert metrics.chunks(['B-NP', 'I-VP']) == [(0, 0, 'NP'), (1, 1, 'VP')]  # a type change splits
  assert metrics.chunks(['B-NP', 'B-NP', 'I-NP']) == [(0, 0, 'NP'), (1, 2, 'NP')]
  result = metrics.conlleval([['B-NP', 'I-NP', 'O', 'B-VP']], [['B-NP', 'I-NP', 'O', 'B-NP']])
  assert result == pytest.approx({'precision': 50.0, 'recall': 50.0, 'f1': 50.0})
  # A partly right span is wrong: gold NP over 0-2, predicted 0-1.
  result = metrics.conlleval([['B-NP', 'I-NP', 'I-NP'], ['B-PP']],
                             [['B-NP', 'I-NP', 'O'], ['B-PP']])
  assert result == pytest.approx({'precision': 50.0, 'recall': 50.0, 'f1': 50.0})


def test_conlleval_chunks_bioes():
  assert metrics.chunks(['S-NP', 'B-VP', 'E-VP', 'S-NP']) == [
      (0, 0, 'NP'), (1, 2, 'VP'), (3, 3, 'NP')]
  assert metrics.chunks(['E-NP', 'B-NP', 'E-NP']) == [(0, 0, 'NP'), (1, 2, 'NP')]
  gold = [['S-NP', 'B-VP', 'E-VP', 'S-NP']]
  predicted = [['S-NP', 'B-VP', 'I-VP', 'E-VP']]  # 1 of 2 predicted right, 1 of 3 gold found
  result = metrics.conlleval(gold, predicted)
  assert result['precision'] == pytest.approx(50.0)
  assert result['recall'] == pytest.approx(100 / 3)
  assert result['f1'] == pytest.approx(40.0)


def test_squad_normalization_em_f1():
  assert metrics.normalize_answer("The  Cat's, hat!") == 'cats hat'
  assert metrics.normalize_answer('an Apple a day') == 'apple day'
  assert metrics.exact_match('a dog', 'Dog.') == 1
  assert metrics.token_f1('big red dog', 'red dog barks') == pytest.approx(2 / 3)
  assert metrics.token_f1('', '') == 1.0 and metrics.token_f1('x', '') == 0.0
  assert metrics.token_f1('', '', v2=False) == 0.0
  dataset = {'data': [{'paragraphs': [{'context': '...', 'qas': [
      {'id': 'q1', 'answers': [{'text': 'the cat'}, {'text': 'a dog'}]},
      {'id': 'q2', 'answers': [{'text': 'big red dog'}]},
      {'id': 'q3', 'answers': [{'text': 'x'}]}]}]}]}
  # q1: max over golds -> EM 1; q2: F1 2/3; q3: no prediction -> 0, still counted (v1.1).
  result = metrics.squad_v1(dataset, {'q1': 'Dog.', 'q2': 'red dog barks'})
  assert result == pytest.approx({'exact_match': 100 / 3, 'f1': 100 * (1 + 2 / 3) / 3})


def test_squad_v2_no_answer_and_best_threshold():
  dataset = [{'paragraphs': [{'context': '...', 'qas': [
      {'id': 'q1', 'answers': []},  # no answer: only '' is right
      {'id': 'q2', 'answers': [{'text': 'Paris'}]},
      {'id': 'q3', 'answers': [{'text': 'blue whale'}, {'text': 'the'}]}]}]}]  # 'the' -> '' dropped
  predictions = {'q1': '', 'q2': 'paris', 'q3': 'whale'}
  na_probs = {'q1': 0.9, 'q2': 0.1, 'q3': 0.8}
  result = metrics.squad_v2(dataset, predictions, na_probs)
  assert result['exact'] == pytest.approx(200 / 3)
  assert result['f1'] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
  assert result['HasAns_total'] == 2 and result['NoAns_exact'] == 100.0
  # Sweep: start 1 (one no-answer q); q2 (0.1) +1 -> 2; q3 (0.8) +0 EM / +2/3 F1; q1 (0.9) +0.
  assert result['best_exact'] == pytest.approx(200 / 3) and result['best_exact_thresh'] == 0.1
  assert result['best_f1'] == pytest.approx(100 * (2 + 2 / 3) / 3)
  assert result['best_f1_thresh'] == 0.8
  # A threshold below a question's probability turns it into a no-answer prediction.
  result = metrics.squad_v2(dataset, predictions, na_probs, na_prob_threshold=0.5)
  assert result['exact'] == pytest.approx(200 / 3)  # q3 -> no answer -> 0; q1 -> 1; q2 -> 1
