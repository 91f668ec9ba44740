"""Tests of electra_jax.tokenization: BERT WordPiece and SentencePiece behind one interface."""
import random

import pytest

from electra_jax import tokenization
from electra_jax.errors import UserError

# A BERT-style vocabulary; the special tokens are not at 0..4, to check that ids come from the file.
WORDPIECE_VOCAB = [
    '[PAD]', '[unused0]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', ',', '.', '!', 'hello', 'world', 'un',
    '##aff', '##able', '中', '文', 'Héllo', 'the']


def write_vocab(tmp_path, tokens, name='vocab.txt'):
  path = tmp_path / name
  path.write_text('\n'.join(tokens) + '\n', encoding='utf-8')
  return str(path)


def test_wordpiece_uncased_matches_bert(tmp_path):
  tok = tokenization.load_tokenizer(write_vocab(tmp_path, WORDPIECE_VOCAB), do_lower_case=True)
  text = 'Héllo, WORLD! 中文 unaffable zzqx.'
  # Lowercased, accents stripped, CJK characters split, punctuation split, greedy longest-match pieces,
  # an unspellable word -> [UNK].
  assert tok.tokenize(text) == [
      'hello', ',', 'world', '!', '中', '文', 'un', '##aff', '##able', '[UNK]', '.']
  assert tok.encode(text) == [9, 6, 10, 8, 14, 15, 11, 12, 13, 2, 7]
  assert tok.encode_batch([text, 'the']) == [tok.encode(text), [17]]
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 2, 3, 4, 5)
  assert tok.kind == 'wordpiece' and tok.vocab_size == len(WORDPIECE_VOCAB)
  assert tok.id_to_token(12) == '##aff'


def test_wordpiece_cased_keeps_case_and_accents(tmp_path):
  tok = tokenization.load_tokenizer(write_vocab(tmp_path, WORDPIECE_VOCAB), do_lower_case=False)
  assert tok.tokenize('Héllo, WORLD! hello') == ['Héllo', ',', '[UNK]', '!', 'hello']


def test_wordpiece_special_tokens_in_text_are_plain_text(tmp_path):
  # As in BERT's FullTokenizer: only the builder and the masking insert special ids.
  tok = tokenization.load_tokenizer(write_vocab(tmp_path, WORDPIECE_VOCAB))
  assert tok.mask_id not in tok.encode('hello [MASK] world')


def test_wordpiece_decode_joins_pieces_and_drops_padding(tmp_path):
  tok = tokenization.load_tokenizer(write_vocab(tmp_path, WORDPIECE_VOCAB))
  ids = [tok.cls_id] + tok.encode('the unaffable world') + [tok.sep_id, tok.pad_id, tok.pad_id]
  assert tok.decode(ids) == '[CLS] the unaffable world [SEP]'


def test_vocab_without_special_tokens_is_a_user_error(tmp_path):
  path = write_vocab(tmp_path, ['[PAD]', '[UNK]', '[CLS]', 'hello'])
  with pytest.raises(UserError, match=r'lacks the special token\(s\) \[SEP\], \[MASK\]'):
    tokenization.load_tokenizer(path)


def test_missing_or_unknown_vocab_file_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    tokenization.load_tokenizer(str(tmp_path / 'nope.txt'))
  with pytest.raises(UserError, match='unknown extension'):
    tokenization.load_tokenizer(write_vocab(tmp_path, WORDPIECE_VOCAB, name='vocab.json'))


def write_corpus(tmp_path, num_lines=400):
  words = ('the quick brown fox jumps over lazy dog while seven wizards quietly judge '
           'boxing matches near an old river bank').split()
  rng = random.Random(0)
  lines = [' '.join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + '.'
           for _ in range(num_lines)]
  path = tmp_path / 'corpus.txt'
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  return str(path)


def test_sentencepiece_training_layout_and_round_trip(tmp_path):
  path = tokenization.train_sentencepiece(
      [write_corpus(tmp_path)], str(tmp_path / 'spm'), vocab_size=40, do_lower_case=True)
  tok = tokenization.load_tokenizer(path)
  assert tok.kind == 'sentencepiece' and tok.vocab_size == 40
  assert [tok.id_to_token(i) for i in range(5)] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
  ids = tok.encode('The lazy Dog jumps over the river.')
  assert all(i >= 5 for i in ids)
  assert tok.decode(ids) == 'the lazy dog jumps over the river.'  # lowercased by the model
  assert ''.join(tok.tokenize('quick fox')).replace('▁', ' ').strip() == 'quick fox'


def read_pieces(model_path):
  with open(model_path[:-len('.model')] + '.vocab', encoding='utf-8') as f:
    return f.read()


def test_sentencepiece_training_is_deterministic(tmp_path):
  corpus = write_corpus(tmp_path)
  a = tokenization.train_sentencepiece([corpus], str(tmp_path / 'a'), 40, do_lower_case=True)
  b = tokenization.train_sentencepiece([corpus], str(tmp_path / 'b'), 40, do_lower_case=True)
  # The .model files differ in the model_prefix they record; the pieces and scores must not.
  assert read_pieces(a) == read_pieces(b)


def test_sentencepiece_vocab_too_large_is_a_user_error(tmp_path):
  with pytest.raises(UserError) as error:
    tokenization.train_sentencepiece(
        [write_corpus(tmp_path)], str(tmp_path / 'spm'), vocab_size=5000, do_lower_case=True)
  message = str(error.value)
  assert 'too small for a SentencePiece vocabulary of 5000' in message
  assert '--config.model.vocab_size=N with N at most ' in message
  assert '\n' not in message
