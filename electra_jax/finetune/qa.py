"""Extractive QA on SQuAD 1.1 / 2.0 JSON: sliding windows, start/end + answerability heads, n-best
span decoding mapped back to the exact characters of the original context, official EM/F1.

Files: DATA_DIR/{train,dev}-v1.1.json (task squad1) or -v2.0.json (task squad2), or the same under
DATA_DIR/squad/; MRQA (task mrqa or mrqa_<name>): DATA_DIR/{train,dev}.jsonl or DATA_DIR/mrqa/,
trained on the first detected answer span, scored like SQuAD 1.1 against the answer strings (the
MRQA script). Predictions (WORKDIR/seed_S/predictions/): predictions.json ({question id: answer
text}, the official script's input; '' = no answer) and, for 2.0, na_probs.json (its --na-prob-file).

- Offsets: QA needs each token's character span in the context, which the WordPiece tokenizer (HF
  `tokenizers`) gives; a SentencePiece vocabulary is refused (UserError).
- Windows: [CLS] question [SEP] context window [SEP]; the question is cut to qa.max_query_length
  tokens; windows of the context start every qa.doc_stride tokens (BERT's rule). A token's answer
  is taken from the window where it has the most context (min(left, right) + 0.01 * length).
- Training: the answer's first and last tokens in the window; a window that does not hold the whole
  answer (or an unanswerable question) points at [CLS] and has answerable = 0.
- Heads (finetune/model.py): the original's joint head (qa.joint_prediction: end conditioned on
  the start, a beam of qa.beam_size starts and ends per start, scored by log-probabilities) or
  independent start/end logits (the qa.n_best_size best of each, scored by logit sums).
- Decoding: valid spans (inside one window's context, end >= start, at most qa.max_answer_length
  tokens, the window being the start token's max-context one); the best over all windows. SQuAD
  2.0: the no-answer probability is 1 - max over windows of sigmoid(answerable logit) (the
  original takes the min over windows of its no-answer logit); predictions.json has '' where it is
  above qa.na_threshold; dev metrics are the official script's with that threshold, plus its
  best-threshold search over the unthresholded answers.
"""
import json

import numpy as np

from electra_jax import paths
from electra_jax.errors import UserError
from electra_jax.finetune import features
from electra_jax.finetune import metrics as metrics_lib


def encode_with_offsets(tokenizer, text: str):
  """-> (ids, [(char_start, char_end)]) of `text`; WordPiece only."""
  if tokenizer.kind != 'wordpiece':
    raise UserError('QA needs a WordPiece vocab (character offsets come from the WordPiece '
                    'tokenizer); this model uses SentencePiece')
  # The Tokenizer wrapper exposes ids only; the offsets are on its `tokenizers` encoder.
  encoder = tokenizer._encoder  # pylint: disable=protected-access
  encoding = encoder.encode(text, add_special_tokens=False)
  return encoding.ids, encoding.offsets


def read_squad(path: str) -> list[dict]:
  """-> [{'id', 'question', 'context', 'answers': [{'text', 'answer_start'}]}] in file order."""
  if not paths.exists(path):
    raise UserError(f'SQuAD file {path} does not exist')
  with paths.open(path, encoding='utf-8') as f:
    data = json.load(f)
  if 'data' not in data:
    raise UserError(f'{path} is not a SQuAD JSON file (no "data")')
  questions = []
  for article in data['data']:
    for paragraph in article['paragraphs']:
      for qa in paragraph['qas']:
        answers = [] if qa.get('is_impossible') else qa.get('answers', [])
        questions.append({'id': qa['id'], 'question': qa['question'],
                          'context': paragraph['context'], 'answers': answers})
  return questions


def read_mrqa(path: str) -> list[dict]:
  """MRQA 2019 JSONL (a header line, then one context per line) -> the same dicts as read_squad.

  'answers' are the detected spans (char_spans are inclusive: [start, end]), used for training;
  'gold' holds the answer strings the MRQA evaluation compares against.
  """
  if not paths.exists(path):
    raise UserError(f'MRQA file {path} does not exist')
  questions = []
  with paths.open(path, encoding='utf-8') as f:
    for n, line in enumerate(f, 1):
      record = json.loads(line) if line.strip() else {}
      if 'header' in record or not record:
        continue
      if 'context' not in record or 'qas' not in record:
        raise UserError(f'{path} line {n} is not an MRQA record (no "context"/"qas")')
      for qa in record['qas']:
        spans = [(s, e) for a in qa.get('detected_answers', []) for s, e in a['char_spans']]
        answers = [{'text': record['context'][s:e + 1], 'answer_start': s} for s, e in spans[:1]]
        questions.append({'id': qa['qid'], 'question': qa['question'],
                          'context': record['context'], 'answers': answers,
                          'gold': list(qa.get('answers', [])) or [a['text'] for a in answers]})
  return questions


def window_starts(num_tokens: int, window: int, stride: int) -> list[int]:
  """BERT's doc spans: a window every `stride` tokens until one reaches the end."""
  starts, start = [], 0
  while True:
    starts.append(start)
    if start + window >= num_tokens:
      return starts
    start += min(window, stride)


def max_context_windows(num_tokens: int, starts: list, window: int) -> np.ndarray:
  """For each context token, the window giving it the most context (BERT's _check_is_max_context)."""
  best, best_score = np.zeros(num_tokens, np.int32), np.full(num_tokens, -np.inf)
  for w, start in enumerate(starts):
    length = min(window, num_tokens - start)
    for t in range(start, start + length):
      score = min(t - start, start + length - 1 - t) + 0.01 * length
      if score > best_score[t]:
        best[t], best_score[t] = w, score
  return best


class QATask:
  head = 'qa'
  num_outputs = 2
  epochs = 2.0

  def __init__(self, config, tokenizer):
    self.config = config
    self.name = config.task.lower()
    if self.name not in ('squad1', 'squad2') and not self.name.startswith('mrqa'):
      raise UserError(f'unknown QA task {config.task!r}: use squad1, squad2 or mrqa')
    self.version_2 = self.name == 'squad2'
    self.mrqa = self.name.startswith('mrqa')
    self.paths = {}
    for split in ('train', 'dev'):
      file = f'{split}.jsonl' if self.mrqa else f'{split}-{"v2.0" if self.version_2 else "v1.1"}.json'
      candidates = [paths.join(d, file) for d in (config.data_dir, paths.join(
          config.data_dir, 'mrqa' if self.mrqa else 'squad'))]
      self.paths[split] = next((p for p in candidates if paths.exists(p)), candidates[0])
    read = read_mrqa if self.mrqa else read_squad
    self.questions = {s: read(p) for s, p in self.paths.items()}
    self.windows, self.offsets = {}, {}
    self.train = self._encode('train', tokenizer, training=True)
    self.eval_sets = {'dev': self._encode('dev', tokenizer, training=False)}
    self.test_sets = {}

  def _encode(self, split, tokenizer, training):
    c, qa = self.config, self.config.qa
    rows, windows, all_offsets, skipped = [], [], [], 0
    for q_index, question in enumerate(self.questions[split]):
      query_ids = tokenizer.encode(question['question'])[:qa.max_query_length]
      context_ids, offsets = encode_with_offsets(tokenizer, question['context'])
      all_offsets.append(offsets)
      window = c.max_seq_length - len(query_ids) - 3
      if window < 1:
        raise UserError(f'max_seq_length {c.max_seq_length} leaves no room for the context after '
                        f'a {len(query_ids)}-token question; raise it or lower qa.max_query_length')
      answer_tokens = None
      if training and question['answers']:
        answer = question['answers'][0]
        char_start = answer['answer_start']
        char_end = char_start + len(answer['text'])
        inside = [t for t, (s, e) in enumerate(offsets) if s < char_end and e > char_start]
        if question['context'][char_start:char_end] != answer['text'] or not inside:
          skipped += 1  # the answer is not where answer_start says: unusable for training
          continue
        answer_tokens = (inside[0], inside[-1])
      starts = window_starts(len(context_ids), window, qa.doc_stride)
      best_window = max_context_windows(len(context_ids), starts, window)
      prefix = [tokenizer.cls_id] + query_ids + [tokenizer.sep_id]
      for w, start in enumerate(starts):
        span = range(start, min(start + window, len(context_ids)))
        ids = prefix + [context_ids[t] for t in span] + [tokenizer.sep_id]
        row = features.pad(ids, [0] * len(prefix) + [1] * (len(span) + 1), tokenizer.pad_id,
                           c.max_seq_length)
        row['context_mask'] = np.zeros(c.max_seq_length, np.int32)
        row['context_mask'][len(prefix):len(prefix) + len(span)] = 1
        start_position = end_position = 0
        if answer_tokens and span.start <= answer_tokens[0] and answer_tokens[1] < span.stop:
          start_position = answer_tokens[0] - start + len(prefix)
          end_position = answer_tokens[1] - start + len(prefix)
        row['start_position'] = np.int32(start_position)
        row['end_position'] = np.int32(end_position)
        row['answerable'] = np.int32(start_position > 0)
        rows.append(row)
        # For decoding: position in the window -> context token, and whether it is max-context.
        windows.append({'question': q_index, 'offset': len(prefix), 'start': start,
                        'length': len(span),
                        'max_context': best_window[span.start:span.stop] == w})
    if skipped:
      print(f'{self.paths[split]}: {skipped} answer(s) not found at answer_start, skipped',
            flush=True)
    if not rows:
      raise UserError(f'{self.paths[split]} gave no usable question')
    self.windows[split], self.offsets[split] = windows, all_offsets
    return features.stack(rows)

  def _candidates(self, i, window, predictions):
    """(score, start, end) sequence positions of window i: the joint head's beam (log-prob sums)
    or the n-best starts x n-best ends of the independent head (logit sums)."""
    if 'start_top_index' in predictions:
      starts = predictions['start_top_index'][i]
      for k, s in enumerate(starts):
        for e, end_log_prob in zip(predictions['end_top_index'][i][k],
                                   predictions['end_top_log_probs'][i][k]):
          yield float(predictions['start_top_log_probs'][i][k] + end_log_prob), int(s), int(e)
    else:
      n = self.config.qa.n_best_size
      start_logits, end_logits = predictions['start_logits'][i], predictions['end_logits'][i]
      for s in np.argsort(-start_logits, kind='stable')[:n]:
        for e in np.argsort(-end_logits, kind='stable')[:n]:
          yield float(start_logits[s] + end_logits[e]), int(s), int(e)

  def decode(self, split: str, predictions: dict):
    """-> ({question id: best non-empty answer text}, {question id: no-answer probability}).

    A span is valid when both ends are context tokens of the window, end >= start, it has at most
    qa.max_answer_length tokens, and the window is the start token's max-context window. The text
    is the context's characters from the start token's first to the end token's last character.
    """
    qa = self.config.qa
    questions = self.questions[split]
    best = [(-np.inf, '') for _ in questions]
    answerable = np.zeros(len(questions))
    for i, window in enumerate(self.windows[split]):
      q = window['question']
      answerable[q] = max(answerable[q], 1 / (1 + np.exp(-predictions['answerable_logit'][i])))
      lo, hi = window['offset'], window['offset'] + window['length']
      for score, s, e in self._candidates(i, window, predictions):
        if not (lo <= s <= e < hi and e - s + 1 <= qa.max_answer_length):
          continue
        if not window['max_context'][s - lo] or score <= best[q][0]:
          continue
        offsets = self.offsets[split][q]
        first, last = window['start'] + s - lo, window['start'] + e - lo
        best[q] = (score, questions[q]['context'][offsets[first][0]:offsets[last][1]])
    answers = {question['id']: text for question, (_, text) in zip(questions, best)}
    na_probs = {question['id']: float(1 - p) for question, p in zip(questions, answerable)}
    return answers, na_probs

  def final_answers(self, answers, na_probs):
    """SQuAD 2.0: '' where the no-answer probability is above qa.na_threshold."""
    if not self.version_2:
      return answers
    return {k: '' if na_probs[k] > self.config.qa.na_threshold else v for k, v in answers.items()}

  def evaluate(self, split: str, predictions: dict) -> dict:
    answers, na_probs = self.decode(split, predictions)
    if self.mrqa:  # the MRQA script: SQuAD 1.1's EM/F1 against the answer strings
      dataset = [{'paragraphs': [{'qas': [
          {'id': q['id'], 'answers': [{'text': g} for g in q['gold']]}
          for q in self.questions[split]]}]}]
    else:
      with paths.open(self.paths[split], encoding='utf-8') as f:
        dataset = json.load(f)
    if self.version_2:  # the official script given --na-prob-file and --na-prob-thresh
      result = metrics_lib.squad_v2(dataset, answers, na_probs, self.config.qa.na_threshold)
    else:
      result = metrics_lib.squad_v1(dataset, answers)
      result['exact'] = result.pop('exact_match')
    result['score'] = result['f1']
    return result

  def write_predictions(self, split, predictions, directory):
    return self.write_eval_predictions(split, predictions, directory)[0]

  def write_eval_predictions(self, split, predictions, directory) -> list:
    paths.makedirs(directory)
    answers, na_probs = self.decode(split, predictions)
    answers = self.final_answers(answers, na_probs)
    written = [paths.join(directory, 'predictions.json')]
    with paths.open(written[0], 'w', encoding='utf-8') as f:
      json.dump(answers, f, indent=2, ensure_ascii=False)
    if self.version_2:
      written.append(paths.join(directory, 'na_probs.json'))
      with paths.open(written[1], 'w') as f:
        json.dump(na_probs, f, indent=2)
    return written
