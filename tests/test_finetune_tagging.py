"""Sequence tagging: CoNLL reading, first-sub-token labels, truncation, and a tiny chunking run."""

import numpy as np
import pytest

from electra_jax import tokenization
from electra_jax.errors import UserError
from electra_jax.finetune import loop
from electra_jax.finetune import tagging
from test_finetune_classification import VOCAB, finetune_config


def test_read_conll_ner_columns(tmp_path):
  (tmp_path / 'train.txt').write_text(
      '-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n')
  sentences = tagging.read_conll(str(tmp_path / 'train.txt'))
  assert sentences == [(['EU', 'rejects'], ['B-ORG', 'O']), (['Peter'], ['B-PER'])]
  chunks = tagging.read_conll(str(tmp_path / 'train.txt'), label_column=2)
  assert chunks[0][1] == ['B-NP', 'B-VP']
  (tmp_path / 'bad.txt').write_text('EU\n')
  with pytest.raises(UserError, match='line 1'):
    tagging.read_conll(str(tmp_path / 'bad.txt'))


def test_labels_on_first_subtoken_and_truncation(tmp_path):
  (tmp_path / 'train.txt').write_text('cats NN B-NP\nsat VBD B-VP\n\n')
  (tmp_path / 'dev.txt').write_text('the DT B-NP\ncats NN I-NP\nsat VBD B-VP\non IN B-PP\n\n')
  config = finetune_config(task='chunk', data_dir=str(tmp_path), max_seq_length=6,
                           **{'tagging.scheme': 'file'})
  tokenizer = tokenization.load_tokenizer(VOCAB)
  task = tagging.TaggingTask(config, tokenizer)
  assert task.labels == ['B-NP', 'B-PP', 'B-VP', 'I-NP']
  train = task.train
  # [CLS] cat ##s sat [SEP] [PAD]: 'cats' labelled at 'cat' only.
  assert tokenizer.tokenize('cats') == ['cat', '##s']
  np.testing.assert_array_equal(train['label_weights'][0], [0, 1, 0, 1, 0, 0])
  np.testing.assert_array_equal(train['labels'][0][[1, 3]], [0, 2])
  # dev: 4 sub-tokens fit (seq 6): the, cat, ##s, sat; 'on' is truncated -> predicted 'O'.
  assert task.word_positions['dev'] == [[1, 2, 4, -1]]
  predictions = {'prediction': np.array([[0, 0, 3, 3, 2, 0]])}  # B-NP I-NP B-VP at 1, 2, 4
  assert task.predicted_tags('dev', predictions) == [['B-NP', 'I-NP', 'B-VP', 'O']]
  result = task.evaluate('dev', predictions)  # 2 of 3 gold chunks found, both predicted right
  assert result['precision'] == 100.0 and result['recall'] == pytest.approx(200 / 3)


def test_bioes_scheme(tmp_path):
  assert tagging.to_bioes(['B-NP', 'I-NP', 'I-NP', 'B-VP', 'O', 'I-PP']) == [
      'B-NP', 'I-NP', 'E-NP', 'S-VP', 'O', 'S-PP']
  assert tagging.to_bio(['B-NP', 'E-NP', 'S-VP', 'O', 'S-PP']) == [
      'B-NP', 'I-NP', 'B-VP', 'O', 'B-PP']
  (tmp_path / 'train.txt').write_text('the DT B-NP\ncat NN I-NP\nsat VBD B-VP\n\n')
  (tmp_path / 'dev.txt').write_text('the DT B-NP\ncat NN I-NP\nsat VBD B-VP\n\n')
  config = finetune_config(task='chunk', data_dir=str(tmp_path))  # scheme 'bioes' by default
  task = tagging.TaggingTask(config, tokenization.load_tokenizer(VOCAB))
  assert task.labels == ['B-NP', 'E-NP', 'S-VP']
  np.testing.assert_array_equal(task.train['labels'][0][1:4], [0, 1, 2])
  # Predictions come back in the files' scheme (BIO) and score against the original tags.
  predictions = {'prediction': np.array([[0, 0, 1, 2] + [0] * 12])}
  assert task.predicted_tags('dev', predictions) == [['B-NP', 'I-NP', 'B-VP']]
  assert task.evaluate('dev', predictions)['f1'] == 100.0


def test_chunking_learns_fixture(tmp_path):
  """Random init (no pre-trained weights): chunk tags depend on the word and its neighbour."""
  config = finetune_config(task='chunk', num_train_epochs=2.0, **{'optim.learning_rate': 3e-3})
  results = loop.run(config, str(tmp_path))
  f1 = results['median']['dev']['f1']
  assert f1 >= 90, results['median']
  written = results['seeds'][0]['predictions']
  first_line = open(written[0]).readline().split()  # conlleval input: word gold predicted
  assert first_line[:2] == ['a', 'B-NP'] and len(first_line) == 3


def test_tagging_head_has_no_dropout_as_the_original():
  """Training-mode tag logits are the tagger applied to the body's (dropped-out) output itself;
  tagging.dropout=True adds a dropout in between."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from electra_jax.finetune import model as ft_model  # pylint: disable=g-import-not-at-top
  config = finetune_config(**{'model.dropout_rate': 0.3})
  ids = jnp.arange(5, 13, dtype=jnp.int32)[None]
  args = (ids, jnp.ones_like(ids), jnp.zeros_like(ids))
  rngs = {'dropout': jax.random.key(1)}
  for dropout in (False, True):
    config.tagging.dropout = dropout
    model = ft_model.make_model(config.model, 'tagging', 4, config)
    params = ft_model.init_params(model, jax.random.key(0))
    out, state = model.apply({'params': params}, *args, deterministic=False, rngs=rngs,
                             capture_intermediates=True)
    hidden = state['intermediates']['discriminator']['__call__'][0]
    direct = hidden @ params['tagger']['kernel'] + params['tagger']['bias']
    assert np.allclose(out['logits'], direct, atol=1e-5) == (not dropout)


def test_default_sequence_lengths_are_the_original_s():
  # configure_finetuning.py: QA tasks 512, chunk 256, everything else (NER is ours) 128.
  assert [loop.default_max_seq_length(t) for t in ('chunk', 'ner', 'squad2', 'mrqa_toy', 'mnli')] \
      == [256, 128, 512, 512, 128]
