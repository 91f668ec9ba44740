r"""Data throughput: the builder (raw text -> tokenize + pack + write TFRecords) against plain-Python
WordPiece, and the input pipeline's batches/s against the train step's steps/s.

  python benchmarks/data_throughput.py --config.batch_size=32 [--repeat=5] [--config=configs/small.py] [--step=true]

1. Corpus: the embedded demo corpus (Python's docs), repeated `--repeat` times (the build then takes
   long enough that process start-up doesn't dominate). No BERT vocab.txt can be downloaded here, so
   a WordPiece vocab.txt of `--vocab_size` pieces is trained on it first (HF tokenizers, untimed).
2. The builder: build_data.build_pretraining_data with that vocab.txt, timed end to end (dealing
   documents to text shards, tokenizing, packing, TFRecord writing), with 1 process (in this process,
   TensorFlow already imported) and with data.num_processes workers. MB/s = raw corpus MB / seconds.
3. Baseline: BERT's original tokenization.py algorithm in plain Python (BasicTokenizer: clean, lower
   case, strip accents, split punctuation and CJK; WordpieceTokenizer: greedy longest-match-first),
   tokenizing the same text, nothing else. Its tokens are checked against ours on a sample.
4. The input pipeline (input_pipeline.train_batches on the built shards) alone: batches/s, against
   the jitted train step of `--config` on random batches (benchmarks/train_step.py): steps/s.
"""
import os
import shutil
import tempfile
import time
import unicodedata

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/small.py', 'configs/*.py file.',
                                          lock_config=False)
_REPEAT = flags.DEFINE_integer('repeat', 5, 'Copies of the demo corpus to build from.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 8000, 'WordPiece pieces to train for the build.')
_BATCHES = flags.DEFINE_integer('batches', 200, 'Input-pipeline batches to time.')
_STEP = flags.DEFINE_bool('step', True, 'Also time the train step (compiles the config).')
_STEP_STEPS = flags.DEFINE_integer('step_steps', 3, 'Train steps to time.')


# ---------------------------------------------------------------------------------------------------
# The baseline: BERT's tokenization.py (BasicTokenizer + WordpieceTokenizer), plain Python.


def _is_whitespace(ch):
  return ch in ' \t\n\r' or unicodedata.category(ch) == 'Zs'


def _is_control(ch):
  return ch not in '\t\n\r' and unicodedata.category(ch) in ('Cc', 'Cf')


def _is_punctuation(ch):
  cp = ord(ch)
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith('P')


def _is_cjk(cp):
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
          or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
          or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class PythonWordPiece:
  """Text -> word pieces, the way the original BERT/ELECTRA tokenization.py does it (lower case)."""

  def __init__(self, vocab_path, max_chars_per_word=100):
    with open(vocab_path, encoding='utf-8') as f:
      self.vocab = {line.rstrip('\n'): i for i, line in enumerate(f)}
    self.max_chars_per_word = max_chars_per_word

  def _basic(self, text):
    chars = []
    for ch in text:  # clean text, pad CJK characters with spaces
      cp = ord(ch)
      if cp == 0 or cp == 0xFFFD or _is_control(ch):
        continue
      if _is_cjk(cp):
        chars += [' ', ch, ' ']
      else:
        chars.append(' ' if _is_whitespace(ch) else ch)
    words = []
    for token in ''.join(chars).split():
      token = unicodedata.normalize('NFD', token.lower())
      token = ''.join(ch for ch in token if unicodedata.category(ch) != 'Mn')  # strip accents
      current = []
      for ch in token:  # split punctuation off
        if _is_punctuation(ch):
          if current:
            words.append(''.join(current))
            current = []
          words.append(ch)
        else:
          current.append(ch)
      if current:
        words.append(''.join(current))
    return words

  def _wordpiece(self, word):
    if len(word) > self.max_chars_per_word:
      return ['[UNK]']
    pieces, start = [], 0
    while start < len(word):  # greedy longest-match-first
      end, piece = len(word), None
      while start < end:
        candidate = word[start:end] if start == 0 else '##' + word[start:end]
        if candidate in self.vocab:
          piece = candidate
          break
        end -= 1
      if piece is None:
        return ['[UNK]']
      pieces.append(piece)
      start = end
    return pieces

  def tokenize(self, text):
    return [p for word in self._basic(text) for p in self._wordpiece(word)]


# ---------------------------------------------------------------------------------------------------


def train_wordpiece_vocab(corpus_path, vocab_size, out_path):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, normalizers, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'],
      show_progress=False)
  tok.train([corpus_path], trainer)
  vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
  with open(out_path, 'w', encoding='utf-8') as f:
    f.writelines(token + '\n' for token, _ in vocab)
  return len(vocab)


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def main(_):
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from electra_jax import build_data  # pylint: disable=g-import-not-at-top
  from electra_jax import demo_corpus  # pylint: disable=g-import-not-at-top
  from electra_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from electra_jax import tokenization  # pylint: disable=g-import-not-at-top
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import  (import not timed)

  config = _CONFIG.value
  load_before = os.getloadavg()
  tmp = tempfile.mkdtemp(prefix='electra_data_bench_')
  try:
    one_copy = os.path.join(tmp, 'demo.txt')
    demo_corpus.write_demo_corpus(one_copy)
    with open(one_copy, encoding='utf-8') as f:
      text = f.read()
    corpus_path = os.path.join(tmp, 'corpus.txt')
    with open(corpus_path, 'w', encoding='utf-8') as f:
      f.write(text * _REPEAT.value)
    corpus_mb = os.path.getsize(corpus_path) / 1e6
    vocab_path = os.path.join(tmp, 'vocab.txt')
    vocab_size = train_wordpiece_vocab(one_copy, _VOCAB_SIZE.value, vocab_path)

    config.data.corpus = corpus_path
    config.data.vocab = vocab_path
    config.model.vocab_size = vocab_size
    builds = {}
    for processes in sorted({1, config.data.num_processes}):
      config.data.num_processes = processes
      config.data.data_dir = os.path.join(tmp, f'data-{processes}')
      _, seconds = timed(lambda: build_data.build_pretraining_data(config, tmp))
      builds[processes] = seconds
    meta = build_data.load_meta(config.data.data_dir)

    # Baseline on the same text (one copy, scaled): tokenization alone.
    baseline = PythonWordPiece(vocab_path)
    lines = [l for l in text.split('\n') if l.strip()]
    _, baseline_s = timed(lambda: [baseline.tokenize(l) for l in lines])
    baseline_mbps = len(text.encode('utf-8')) / 1e6 / baseline_s
    ours_tok = tokenization.load_tokenizer(vocab_path, do_lower_case=True)
    sample = lines[::50]
    agree = sum(baseline.tokenize(l) == ours_tok.tokenize(l) for l in sample)
    _, ours_tok_s = timed(lambda: ours_tok.encode_batch(lines))
    ours_tok_mbps = len(text.encode('utf-8')) / 1e6 / ours_tok_s

    # Input pipeline alone.
    batches = input_pipeline.train_batches(config, meta)
    next(batches)  # start-up (graph building, first file reads) not timed
    _, pipeline_s = timed(lambda: [next(batches) for _ in range(_BATCHES.value)])
    pipeline_bps = _BATCHES.value / pipeline_s
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  step_sps = None
  if _STEP.value:
    import jax  # pylint: disable=g-import-not-at-top
    import train_step as train_step_bench  # pylint: disable=g-import-not-at-top
    step_config = _CONFIG.value
    step_config.model.vocab_size = _CONFIG.value.model.vocab_size
    step, state, batch, key = train_step_bench.build_step(step_config)
    state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(_STEP_STEPS.value):
      state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    step_sps = _STEP_STEPS.value / (time.perf_counter() - t0)
  load_after = os.getloadavg()

  print(f'machine: {os.cpu_count()} cores; load average {load_before[0]:.2f} before, '
        f'{load_after[0]:.2f} after (1 min)')
  print(f'corpus: demo corpus x {_REPEAT.value} = {corpus_mb:.1f} MB; WordPiece vocab '
        f'{vocab_size} pieces; {meta.num_train_examples + meta.num_eval_examples:,} examples '
        f'of {config.max_seq_length} tokens, {config.data.num_shards} train shards')
  print()
  print(f'| {"what":<52} | {"MB/s":>6} |')
  print(f'|{"-" * 54}|{"-" * 8}|')
  for processes, seconds in builds.items():
    print(f'| {f"build_data, {processes} process(es), end to end ({seconds:.1f}s)":<52} | '
          f'{corpus_mb / seconds:>6.2f} |')
  print(f'| {"our tokenizer alone (HF tokenizers, encode_batch)":<52} | {ours_tok_mbps:>6.2f} |')
  print(f'| {"plain-Python WordPiece (BERT tokenization.py) alone":<52} | {baseline_mbps:>6.2f} |')
  print(f'(baseline tokens equal ours on {agree}/{len(sample)} sampled lines)')
  print()
  print(f'input pipeline alone: {pipeline_bps:,.1f} batches/s of {config.batch_size} x '
        f'{config.max_seq_length}')
  if step_sps:
    print(f'train step ({config.batch_size} x {config.max_seq_length}, random batches): '
          f'{step_sps:.3f} steps/s -> the pipeline is {pipeline_bps / step_sps:,.0f}x faster '
          '(target >= 10x)')


if __name__ == '__main__':
  app.run(main)
