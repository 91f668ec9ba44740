"""The pre-trained discriminator as a tool: how likely each token is to have been replaced.

- `token_scores(texts, model_dir)`: per token P(replaced), and per text the mean log P(original)
  of its tokens (higher = more natural text). `--mode=score` writes them as JSONL.
- `zeroshot(...)`: classification by replaced-token detection ("ELECTRA is a zero-shot learner"):
  each label has a word, the word fills a slot of a prompt template, and the label whose word the
  discriminator finds least likely replaced wins. `--mode=zeroshot` scores a custom task's dev file.

`model_dir`: an electra_jax pre-training workdir or its pretrained/ dir, a HF ELECTRA
discriminator dir or a Google TF1 checkpoint (read by convert.py). Texts are batched by padded
length (multiples of 32 tokens), so a few shapes compile however many texts there are.
"""
import dataclasses
import functools
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from electra_jax import model as model_lib
from electra_jax import paths
from electra_jax import tokenization
from electra_jax.errors import UserError

_LENGTH_STEP = 32  # texts are padded to a multiple of this many tokens


@dataclasses.dataclass
class Scorer:
  """A loaded discriminator: `probabilities(id_lists)` gives P(replaced) for every token."""
  model_config: object
  params: dict
  tokenizer: tokenization.Tokenizer
  max_seq_length: int = 128
  batch_size: int = 32

  def __post_init__(self):
    model = model_lib.ElectraPretrainer(self.model_config)
    self._logits = jax.jit(functools.partial(model.apply, method=model.discriminator_logits))

  def probabilities(self, id_lists: list[list[int]]) -> list[np.ndarray]:
    """P(replaced) of each id of each list ([CLS] ... [SEP] included), in the lists' order."""
    out = [None] * len(id_lists)
    by_length = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    for start in range(0, len(by_length), self.batch_size):
      rows = by_length[start:start + self.batch_size]
      longest = max(len(id_lists[i]) for i in rows)
      length = min(-(-longest // _LENGTH_STEP) * _LENGTH_STEP, self.model_config.max_position_embeddings)
      ids = np.full((self.batch_size, length), self.tokenizer.pad_id, np.int32)
      mask = np.zeros_like(ids)
      for r, i in enumerate(rows):
        ids[r, :len(id_lists[i])] = id_lists[i]
        mask[r, :len(id_lists[i])] = 1
      logits = np.asarray(self._logits({'params': self.params}, ids, mask, np.zeros_like(ids)))
      probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
      for r, i in enumerate(rows):
        out[i] = probs[r, :len(id_lists[i])]
    return out

  def encode(self, text: str) -> tuple[list[int], bool]:
    """[CLS] text [SEP], cut to max_seq_length; returns (ids, whether it was cut)."""
    ids = self.tokenizer.encode(text)
    room = self.max_seq_length - 2
    return [self.tokenizer.cls_id] + ids[:room] + [self.tokenizer.sep_id], len(ids) > room


def load(model_dir: str, max_seq_length: int = 128, batch_size: int = 32, vocab: str = '',
         do_lower_case: bool = True) -> Scorer:
  """The discriminator of `model_dir` (see the module docstring) with its vocabulary."""
  from electra_jax import convert  # pylint: disable=g-import-not-at-top
  weights = convert.read(model_dir, vocab=vocab, do_lower_case=do_lower_case)
  if weights.discriminator is None:
    raise UserError(f'{model_dir} holds no discriminator; scoring needs one')
  vocab_path = weights.vocab.get('vocab_path', '')
  if vocab_path and not paths.exists(vocab_path):  # a moved workdir: look next to the weights
    for directory in (model_dir, paths.join(model_dir, 'pretrained')):
      if paths.exists(paths.join(directory, paths.basename(vocab_path))):
        vocab_path = paths.join(directory, paths.basename(vocab_path))
  if not vocab_path or not paths.exists(vocab_path):
    raise UserError(f'{model_dir} names no vocabulary that exists; pass one (data.vocab)')
  tokenizer = tokenization.load_tokenizer(vocab_path, weights.vocab.get('do_lower_case',
                                                                         do_lower_case))
  if max_seq_length > weights.model.max_position_embeddings:
    raise UserError(f'max_seq_length {max_seq_length} > the model\'s max_position_embeddings '
                    f'{weights.model.max_position_embeddings}')
  params = jax.tree.map(jnp.asarray, weights.discriminator)
  return Scorer(weights.model, params, tokenizer, max_seq_length, batch_size)


def token_scores(texts: list[str], model_dir_or_scorer, **load_kwargs) -> list[dict]:
  """For each text: its tokens, their P(replaced), and `score` = mean log P(original) over the
  text's tokens ([CLS]/[SEP] left out); `truncated` when it was cut to max_seq_length."""
  scorer = (model_dir_or_scorer if isinstance(model_dir_or_scorer, Scorer)
            else load(model_dir_or_scorer, **load_kwargs))
  encoded = [scorer.encode(t) for t in texts]
  probs = scorer.probabilities([ids for ids, _ in encoded])
  out = []
  for text, (ids, cut), p in zip(texts, encoded, probs):
    p = p[1:-1]  # the text's own tokens
    out.append({'text': text,
                'tokens': [scorer.tokenizer.id_to_token(i) for i in ids[1:-1]],
                'p_replaced': [round(float(x), 6) for x in p],
                'score': float(np.mean(np.log1p(-np.minimum(p, 1 - 1e-12)))) if len(p) else 0.0,
                'truncated': cut})
  return out


# ---- Zero-shot classification.

def parse_label_words(spec: str) -> dict:
  """'label:word,label:word' -> {label: word} (the word may be several tokens)."""
  pairs = [p for p in spec.split(',') if p.strip()]
  words = {}
  for pair in pairs:
    label, sep, word = pair.partition(':')
    if not sep or not label.strip() or not word.strip():
      raise UserError(f"zeroshot.label_words: {pair!r} is not 'label:word'")
    words[label.strip()] = word.strip()
  if len(words) < 2:
    raise UserError("zeroshot.label_words needs at least two 'label:word' pairs")
  return words


def prompt_ids(scorer: Scorer, template: str, text_a: str, text_b: str | None, word: str):
  """[CLS] template [SEP] with the texts and `word` filled in; returns (ids, positions of the
  word's tokens). When the whole does not fit, the longer text is cut at its end."""
  if template.count('{label}') != 1:
    raise UserError("zeroshot.template needs exactly one '{label}' slot")
  before, after = template.split('{label}')
  tok = scorer.tokenizer
  word_ids = tok.encode(word)
  a, b = text_a, text_b or ''
  for _ in range(10):
    fill = lambda part: part.replace('{text}', a).replace('{text_a}', a).replace('{text_b}', b)
    head, tail = tok.encode(fill(before)), tok.encode(fill(after))
    ids = [tok.cls_id] + head + word_ids + tail + [tok.sep_id]
    over = len(ids) - scorer.max_seq_length
    if over <= 0:
      return ids, list(range(1 + len(head), 1 + len(head) + len(word_ids)))
    a_ids, b_ids = tok.encode(a), tok.encode(b)
    if not a_ids and not b_ids:
      break
    # (+2: decoding and re-encoding a cut text can give a token or two more)
    if len(b_ids) > len(a_ids):
      b = tok.decode(b_ids[:max(len(b_ids) - over - 2, 0)])
    else:
      a = tok.decode(a_ids[:max(len(a_ids) - over - 2, 0)])
  raise UserError(f'zeroshot.template with the label word {word!r} does not fit in '
                  f'max_seq_length {scorer.max_seq_length} even without the text')


def zeroshot(scorer: Scorer, examples: list[dict], template: str, label_words: dict) -> list[dict]:
  """For each example ({'text_a', 'text_b'}): each label's mean P(replaced) over its word's tokens
  and the predicted label (the smallest)."""
  labels = list(label_words)
  id_lists, spans = [], []
  for e in examples:
    for label in labels:
      ids, span = prompt_ids(scorer, template, e['text_a'], e.get('text_b'), label_words[label])
      id_lists.append(ids)
      spans.append(span)
  probs = scorer.probabilities(id_lists)
  out = []
  for i, _ in enumerate(examples):
    per_label = {label: float(np.mean(probs[i * len(labels) + j][spans[i * len(labels) + j]]))
                 for j, label in enumerate(labels)}
    out.append({'p_replaced': per_label, 'prediction': min(per_label, key=per_label.get)})
  return out


# ---- Command-line modes (main.py).

def run_score(config, workdir: str) -> str:
  """--mode=score: texts from config.score.input (a file, one text per line, or '-' for stdin)
  -> WORKDIR/scores.jsonl (or config.score.output)."""
  if not config.init_checkpoint:
    raise UserError('set --config.init_checkpoint to the model to score with')
  source = config.score.input
  if source == '-':
    texts = [line.rstrip('\n') for line in sys.stdin]
  else:
    if not source or not paths.isfile(source):
      raise UserError(f'score.input {source!r} is not a file (one text per line, or - for stdin)')
    with paths.open(source, encoding='utf-8') as f:
      texts = [line.rstrip('\n') for line in f]
  texts = [t for t in texts if t.strip()]
  scorer = load(config.init_checkpoint, config.max_seq_length or 128, config.eval_batch_size,
                config.data.vocab, config.data.do_lower_case)
  paths.makedirs(workdir)
  output = config.score.output or paths.join(workdir, 'scores.jsonl')
  with paths.open(output + '.tmp', 'w') as f:
    for row in token_scores(texts, scorer):
      f.write(json.dumps(row) + '\n')
  paths.replace(output + '.tmp', output)
  print(f'scored {len(texts)} texts -> {output}', flush=True)
  return output


def run_zeroshot(config, workdir: str) -> dict:
  """--mode=zeroshot: the custom task's dev file (config.custom.*) scored with the template and
  label words; WORKDIR/results.json (accuracy, majority-class accuracy) and predictions.jsonl."""
  from electra_jax.finetune import classification  # pylint: disable=g-import-not-at-top
  if not config.init_checkpoint:
    raise UserError('set --config.init_checkpoint to the model to classify with')
  label_words = parse_label_words(config.zeroshot.label_words)
  c = config.custom
  examples = classification.read_custom_file(c.dev_file, c.text_a, c.text_b, c.label)
  unknown = sorted({e['label'] for e in examples} - set(label_words) - {None})
  if unknown:
    raise UserError(f'{c.dev_file} has labels {unknown[:5]} without a word in '
                    'zeroshot.label_words')
  labelled = [e for e in examples if e['label'] is not None]
  if not labelled:
    raise UserError(f'{c.dev_file} has no labelled examples')
  scorer = load(config.init_checkpoint, config.max_seq_length or 128, config.eval_batch_size,
                config.data.vocab, config.data.do_lower_case)
  predictions = zeroshot(scorer, labelled, config.zeroshot.template, label_words)
  correct = [p['prediction'] == e['label'] for p, e in zip(predictions, labelled)]
  counts = {label: sum(e['label'] == label for e in labelled) for label in label_words}
  results = {'task': c.name or 'custom', 'template': config.zeroshot.template,
             'label_words': label_words, 'num_examples': len(labelled),
             'accuracy': 100.0 * float(np.mean(correct)),
             'majority_class': max(counts, key=counts.get),
             'majority_accuracy': 100.0 * max(counts.values()) / len(labelled),
             'predicted_counts': {label: sum(p['prediction'] == label for p in predictions)
                                  for label in label_words}}
  paths.makedirs(workdir)
  with paths.open(paths.join(workdir, 'predictions.jsonl'), 'w') as f:
    for e, p in zip(labelled, predictions):
      f.write(json.dumps({'id': e['id'], 'label': e['label'], **p}) + '\n')
  with paths.open(paths.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print(f"zero-shot accuracy {results['accuracy']:.2f} on {len(labelled)} examples "
        f"(majority class {results['majority_accuracy']:.2f})", flush=True)
  return results
