"""Tokenizers: BERT/ELECTRA WordPiece (`vocab.txt`) and SentencePiece (`.model`), one interface.

WordPiece runs on the `tokenizers` library set up like BERT's FullTokenizer: BertNormalizer (clean text,
spaces around CJK characters, lowercase and strip accents when `do_lower_case`), BertPreTokenizer
(whitespace and punctuation splits) and greedy longest-match WordPiece with '##' continuations, [UNK]
for a word of over 100 characters or one that cannot be spelled. As in the original, "[MASK]" typed in
raw text is not the mask token: special tokens enter only through the data builder and the masking code.

SentencePiece models are trained here (`train_sentencepiece`) with the special pieces at fixed ids:
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
"""
import contextlib
import os
import re
import sys
import tempfile

import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from electra_jax import paths
from electra_jax.errors import UserError

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
# BERT's WordPiece: a word longer than this becomes a single [UNK].
_MAX_WORDPIECE_CHARS = 100
# SentencePiece reads at most this many sentences (sampled with a fixed seed) to train a model.
_SPM_MAX_SENTENCES = 2_000_000
_SPM_SEED = 12345
# The trained model depends on the thread count (not on the machine), so it is fixed.
_SPM_THREADS = 2


class Tokenizer:
  """Text <-> ids with the special-token ids the model and the data builder need.

  Attributes:
    kind: 'wordpiece' or 'sentencepiece'.
    path: the vocab.txt or .model file it was loaded from.
    vocab_size: number of ids.
    pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
  """

  def __init__(self, kind: str, path: str, encoder, token_to_id):
    self.kind = kind
    self.path = path
    self._encoder = encoder
    ids = {token: token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, i in ids.items() if i is None]
    if missing:
      raise UserError(f'vocabulary {path} lacks the special token(s) {", ".join(missing)}')
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)

  @property
  def vocab_size(self) -> int:
    if self.kind == 'wordpiece':
      return self._encoder.get_vocab_size(with_added_tokens=True)
    return self._encoder.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP]."""
    if self.kind == 'wordpiece':
      return self._encoder.encode(text, add_special_tokens=False).ids
    return self._encoder.encode(text, out_type=int)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """`encode` of each text; faster than a loop for WordPiece (runs in Rust threads)."""
    if self.kind == 'wordpiece':
      return [e.ids for e in self._encoder.encode_batch(texts, add_special_tokens=False)]
    return self._encoder.encode(texts, out_type=int)

  def tokenize(self, text: str) -> list[str]:
    """The tokens (word pieces) of `text`."""
    if self.kind == 'wordpiece':
      return self._encoder.encode(text, add_special_tokens=False).tokens
    return self._encoder.encode(text, out_type=str)

  def id_to_token(self, i: int) -> str:
    if not 0 <= i < self.vocab_size:
      raise ValueError(f'id {i} is outside the vocabulary (size {self.vocab_size})')
    if self.kind == 'wordpiece':
      return self._encoder.id_to_token(i)
    return self._encoder.id_to_piece(i)

  def decode(self, ids) -> str:
    """Text of `ids`; [PAD] ids are dropped, other special tokens are shown as [CLS], [MASK], ..."""
    ids = [int(i) for i in ids if int(i) != self.pad_id]
    if self.kind == 'wordpiece':
      return self._encoder.decode(ids, skip_special_tokens=False)
    return self._encoder.decode(ids)

  def __repr__(self):
    return f'Tokenizer(kind={self.kind!r}, path={self.path!r}, vocab_size={self.vocab_size})'


def _load_wordpiece(path: str, do_lower_case: bool) -> Tokenizer:
  try:
    with paths.local_copy(path) as local:  # the Rust side reads local files only
      model = models.WordPiece.from_file(
          local, unk_token='[UNK]', max_input_chars_per_word=_MAX_WORDPIECE_CHARS)
  except Exception as e:  # the Rust side raises plain Exception subclasses
    raise UserError(f'cannot read WordPiece vocabulary {path}: {e}') from e
  encoder = tokenizers.Tokenizer(model)
  # strip_accents=None follows lowercase, as in BERT: uncased models strip accents, cased keep them.
  encoder.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case)
  encoder.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  encoder.decoder = decoders.WordPiece(prefix='##')
  return Tokenizer('wordpiece', path, encoder, encoder.token_to_id)


def _load_sentencepiece(path: str) -> Tokenizer:
  try:
    with paths.local_copy(path) as local:
      encoder = spm.SentencePieceProcessor(model_file=local)
  except (RuntimeError, OSError) as e:
    raise UserError(f'cannot read SentencePiece model {path}: {e}') from e

  def piece_to_id(piece):
    i = encoder.piece_to_id(piece)
    if encoder.id_to_piece(i) == piece:  # unknown pieces map to the unk id: they are absent
      return i
    # Models trained elsewhere (e.g. ALBERT's) name padding and unknown '<pad>' and '<unk>'.
    if piece == '[PAD]' and encoder.pad_id() >= 0:
      return encoder.pad_id()
    if piece == '[UNK]':
      return encoder.unk_id()
    return None

  return Tokenizer('sentencepiece', path, encoder, piece_to_id)


def load_tokenizer(path: str, do_lower_case: bool = True) -> Tokenizer:
  """Loads a WordPiece `*.txt` vocabulary or a SentencePiece `*.model`.

  `do_lower_case` applies to WordPiece only; a SentencePiece model carries its own normalization.
  """
  if not path or not paths.isfile(path):
    raise UserError(f'vocabulary file {path!r} does not exist')
  if path.endswith('.txt'):
    return _load_wordpiece(path, do_lower_case)
  if path.endswith('.model'):
    return _load_sentencepiece(path)
  raise UserError(
      f'vocabulary {path} has an unknown extension: use a WordPiece vocab.txt or a SentencePiece .model')


# The 'vocab' entry of a pretrained/ dir's config.json (checkpoint.write_pretrained): what loading
# the weights elsewhere needs to know of their vocabulary.
VOCAB_INFO_KEYS = ('vocab_path', 'vocab_kind', 'vocab_size', 'do_lower_case', 'pad_id', 'unk_id',
                   'cls_id', 'sep_id', 'mask_id')


def vocab_info(path: str, do_lower_case: bool = True) -> dict:
  """VOCAB_INFO_KEYS of the vocabulary file `path`."""
  tok = load_tokenizer(path, do_lower_case)
  return {'vocab_path': paths.abspath(path), 'vocab_kind': tok.kind,
          'vocab_size': tok.vocab_size, 'do_lower_case': do_lower_case, 'pad_id': tok.pad_id,
          'unk_id': tok.unk_id, 'cls_id': tok.cls_id, 'sep_id': tok.sep_id, 'mask_id': tok.mask_id}


def _has_fileno(stream) -> bool:
  try:
    stream.fileno()
    return True
  except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation in notebooks
    return False


def train_sentencepiece(text_files: list[str], model_prefix: str, vocab_size: int,
                        do_lower_case: bool) -> str:
  """Trains a unigram SentencePiece model on `text_files`; returns the path of `model_prefix`.model.

  Unigram (as in ALBERT and T5) rather than BPE: it trains faster and its segmentation is the more
  probable one. The special pieces get ids [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4; there are no
  BOS/EOS pieces (the builder adds [CLS]/[SEP]). With `do_lower_case` the model lowercases its input
  (normalization 'nmt_nfkc_cf'). The sentence sample and the result are deterministic: a fixed thread
  count and a fixed seed.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise UserError(f'vocab_size {vocab_size} is too small; set --config.model.vocab_size=N (N > 5)')
  spm.set_random_generator_seed(_SPM_SEED)
  try:
    with open(os.devnull, 'w') as quiet, contextlib.ExitStack() as files:
      # sentencepiece reads and writes local files only: copies of remote inputs, and a local
      # output uploaded after training when model_prefix is a URL.
      inputs = [files.enter_context(paths.local_copy(f)) for f in text_files]
      local_prefix = model_prefix
      if paths.is_url(model_prefix):
        local_prefix = os.path.join(files.enter_context(tempfile.TemporaryDirectory()),
                                    paths.basename(model_prefix))
      # sentencepiece redirects the stderr file descriptor into `logstream`; a notebook's stderr
      # has none, and there its log goes to the kernel's own stderr instead.
      quiet_kwargs = {'logstream': quiet} if _has_fileno(sys.stderr) else {}
      spm.SentencePieceTrainer.train(
          input=inputs,
          model_prefix=local_prefix,
          vocab_size=vocab_size,
          model_type='unigram',
          character_coverage=0.9995,
          normalization_rule_name='nmt_nfkc_cf' if do_lower_case else 'nmt_nfkc',
          pad_id=0, pad_piece='[PAD]',
          unk_id=1, unk_piece='[UNK]',
          bos_id=-1, eos_id=-1,
          user_defined_symbols=['[CLS]', '[SEP]', '[MASK]'],
          input_sentence_size=_SPM_MAX_SENTENCES,
          shuffle_input_sentence=True,
          num_threads=_SPM_THREADS,
          minloglevel=1,  # its progress log is long; warnings and errors still show
          **quiet_kwargs)
      if local_prefix != model_prefix:
        for suffix in ('.model', '.vocab'):
          paths.copy(local_prefix + suffix, model_prefix + suffix)
  except RuntimeError as e:
    message = str(e)
    if 'Vocabulary size too high' in message or 'vocab_size' in message.lower():
      largest = re.search(r'<=\s*(\d+)', message)
      hint = f'at most {largest.group(1)}' if largest else 'a smaller N'
      raise UserError(
          f'the corpus is too small for a SentencePiece vocabulary of {vocab_size} pieces: '
          f'set --config.model.vocab_size=N with N {hint}, or use a larger corpus') from e
    raise UserError(f'SentencePiece training failed: {message.splitlines()[-1]}') from e
  return model_prefix + '.model'
