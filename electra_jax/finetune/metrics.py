"""Fine-tuning metrics, computed on the host (numpy) from whole-eval-set predictions.

Every score is a percentage (0-100), like the GLUE leaderboard, conlleval and the SQuAD script.
- Classification: accuracy, binary F1 (positive class 1), Matthews correlation (CoLA).
- Regression (STS-B): Pearson and Spearman correlation.
- Tagging: conlleval's entity-level precision/recall/F1: a predicted chunk counts only when a gold
  chunk has exactly its start, end and type. Chunk boundaries follow conlleval.pl's rules, extended to
  S- tags (a single-token chunk) so that BIOES is read as its authors meant; BIO, IOB1 and IOE read
  exactly as conlleval reads them (an I- after O or after another type starts a chunk).
- SQuAD: the official evaluation scripts (v1.1 and v2.0), re-implemented line by line: answers are
  compared after `normalize_answer`, EM and token F1 take the max over the gold answers; in v2.0 a
  question whose gold answers all normalize to '' is a no-answer question (the only correct answer
  is ''), and with no-answer probabilities the best threshold is searched as the script does.
"""
import collections
import re
import string

import numpy as np
import scipy.stats


# ---- Classification and regression.

def accuracy(labels, predictions) -> float:
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  return 100.0 * float(np.mean(labels == predictions)) if labels.size else 0.0


def f1_binary(labels, predictions, positive=1) -> float:
  labels, predictions = np.asarray(labels) == positive, np.asarray(predictions) == positive
  tp = np.sum(labels & predictions)
  denominator = 2 * tp + np.sum(~labels & predictions) + np.sum(labels & ~predictions)
  return 100.0 * float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(labels, predictions) -> float:
  """Multi-class MCC (Gorodkin's R_K; the binary phi coefficient for two classes). 0 if undefined."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  classes = np.union1d(labels, predictions)
  confusion = np.zeros((len(classes), len(classes)), np.float64)
  np.add.at(confusion, (np.searchsorted(classes, labels), np.searchsorted(classes, predictions)), 1)
  t, p = confusion.sum(axis=1), confusion.sum(axis=0)
  c, s = np.trace(confusion), confusion.sum()
  denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
  return 100.0 * float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(labels, predictions) -> float:
  labels, predictions = np.asarray(labels, np.float64), np.asarray(predictions, np.float64)
  if labels.std() == 0 or predictions.std() == 0:
    return 0.0
  return 100.0 * float(np.corrcoef(labels, predictions)[0, 1])


def spearman(labels, predictions) -> float:
  """Pearson correlation of the ranks (ties get their average rank)."""
  return pearson(scipy.stats.rankdata(labels), scipy.stats.rankdata(predictions))


# ---- Tagging (conlleval).

def _split_tag(tag):
  if tag in ('O', '.', ''):
    return 'O', ''
  prefix, _, kind = tag.partition('-')
  return (prefix, kind) if kind else ('I', prefix)  # a bare 'NP' reads as 'I-NP'


def _chunk_ends(prev_tag, tag, prev_type, type_):
  """conlleval endOfChunk: the chunk holding the previous token ends before this token."""
  if prev_tag in ('E', 'S'):
    return True
  if prev_tag in ('B', 'I') and tag in ('B', 'S', 'O'):
    return True
  return prev_tag != 'O' and prev_type != type_


def _chunk_starts(prev_tag, tag, prev_type, type_):
  """conlleval startOfChunk: a chunk starts at this token."""
  if tag in ('B', 'S'):
    return True
  if prev_tag in ('E', 'S', 'O') and tag in ('I', 'E'):
    return True
  return tag != 'O' and prev_type != type_


def chunks(tags) -> list:
  """(start, end inclusive, type) of each chunk of one sentence's tags, as conlleval finds them."""
  found, start = [], None
  prev_tag, prev_type = 'O', ''
  for i, full_tag in enumerate(list(tags) + ['O']):  # a sentence ends like an O follows it
    tag, type_ = _split_tag(full_tag)
    if start is not None and _chunk_ends(prev_tag, tag, prev_type, type_):
      found.append((start, i - 1, prev_type))
      start = None
    if _chunk_starts(prev_tag, tag, prev_type, type_):
      start = i
    prev_tag, prev_type = tag, type_
  return found


def conlleval(gold_sentences, predicted_sentences) -> dict:
  """Entity-level precision, recall and F1 over sentences of tags (lists of lists of strings)."""
  if len(gold_sentences) != len(predicted_sentences):
    raise ValueError(f'{len(gold_sentences)} gold sentences but {len(predicted_sentences)} predicted')
  correct = num_gold = num_predicted = 0
  for gold, predicted in zip(gold_sentences, predicted_sentences):
    if len(gold) != len(predicted):
      raise ValueError(f'a sentence has {len(gold)} gold tags but {len(predicted)} predicted')
    gold_chunks, predicted_chunks = set(chunks(gold)), set(chunks(predicted))
    correct += len(gold_chunks & predicted_chunks)
    num_gold += len(gold_chunks)
    num_predicted += len(predicted_chunks)
  precision = 100.0 * correct / num_predicted if num_predicted else 0.0
  recall = 100.0 * correct / num_gold if num_gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'precision': precision, 'recall': recall, 'f1': f1}


# ---- SQuAD (official evaluate-v1.1.py and evaluate-v2.0.py).

def normalize_answer(s: str) -> str:
  """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
  s = s.lower()
  s = ''.join(ch for ch in s if ch not in set(string.punctuation))
  s = re.sub(r'\b(a|an|the)\b', ' ', s, flags=re.UNICODE)
  return ' '.join(s.split())


def _answer_tokens(s):
  return normalize_answer(s).split() if s else []


def exact_match(gold: str, predicted: str) -> int:
  return int(normalize_answer(gold) == normalize_answer(predicted))


def token_f1(gold: str, predicted: str, v2: bool = True) -> float:
  """v2: an empty answer on either side scores 1 if both are empty, else 0 (v1.1 scores it 0)."""
  gold_tokens, predicted_tokens = _answer_tokens(gold), _answer_tokens(predicted)
  if v2 and (not gold_tokens or not predicted_tokens):
    return float(gold_tokens == predicted_tokens)
  num_same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
  if num_same == 0:
    return 0.0
  precision, recall = num_same / len(predicted_tokens), num_same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def _questions(dataset):
  """SQuAD JSON 'data' list (or the whole file's dict) -> its qas dicts."""
  if isinstance(dataset, dict):
    dataset = dataset['data']
  for article in dataset:
    for paragraph in article['paragraphs']:
      yield from paragraph['qas']


def squad_v1(dataset, predictions: dict) -> dict:
  """evaluate-v1.1.py: every question counts; a missing prediction scores 0."""
  em = f1 = total = 0.0
  for qa in _questions(dataset):
    total += 1
    if qa['id'] not in predictions:
      continue
    golds = [a['text'] for a in qa['answers']]
    em += max(exact_match(g, predictions[qa['id']]) for g in golds)
    f1 += max(token_f1(g, predictions[qa['id']], v2=False) for g in golds)
  return {'exact_match': 100.0 * em / total if total else 0.0,
          'f1': 100.0 * f1 / total if total else 0.0}


def _best_threshold(predictions, scores, na_probs, has_answer):
  """The script's find_best_thresh: sweep the no-answer threshold over the sorted probabilities."""
  score = best = sum(1 for q in has_answer if not has_answer[q])  # as the script: all questions
  best_threshold = 0.0
  for qid in sorted(na_probs, key=lambda q: na_probs[q]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      score += scores[qid]
    elif predictions[qid]:
      score -= 1
    if score > best:
      best, best_threshold = score, na_probs[qid]
  return 100.0 * best / len(scores), best_threshold


def squad_v2(dataset, predictions: dict, na_probs: dict | None = None,
             na_prob_threshold: float = 1.0) -> dict:
  """evaluate-v2.0.py: questions without a prediction are skipped (the script warns about them)."""
  exact, f1, has_answer = {}, {}, {}
  for qa in _questions(dataset):
    qid = qa['id']
    has_answer[qid] = bool(qa['answers'])
    golds = [a['text'] for a in qa['answers'] if normalize_answer(a['text'])] or ['']
    if qid not in predictions:
      continue
    exact[qid] = max(exact_match(g, predictions[qid]) for g in golds)
    f1[qid] = max(token_f1(g, predictions[qid]) for g in golds)
  probs = na_probs if na_probs is not None else {q: 0.0 for q in predictions}

  def thresholded(scores):
    return {q: float(not has_answer[q]) if probs[q] > na_prob_threshold else s
            for q, s in scores.items()}

  exact_t, f1_t = thresholded(exact), thresholded(f1)
  result = {'exact': 100.0 * sum(exact_t.values()) / len(exact_t) if exact_t else 0.0,
            'f1': 100.0 * sum(f1_t.values()) / len(f1_t) if f1_t else 0.0,
            'total': len(exact_t)}
  for name, subset in (('HasAns', [q for q in exact_t if has_answer[q]]),
                       ('NoAns', [q for q in exact_t if not has_answer[q]])):
    if subset:
      result[f'{name}_exact'] = 100.0 * sum(exact_t[q] for q in subset) / len(subset)
      result[f'{name}_f1'] = 100.0 * sum(f1_t[q] for q in subset) / len(subset)
      result[f'{name}_total'] = len(subset)
  if na_probs is not None and exact:
    result['best_exact'], result['best_exact_thresh'] = _best_threshold(
        predictions, exact, na_probs, has_answer)
    result['best_f1'], result['best_f1_thresh'] = _best_threshold(
        predictions, f1, na_probs, has_answer)
  return result
