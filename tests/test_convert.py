"""Checkpoint interop (convert.py): HF transformers and Google TF1 ELECTRA <-> electra_jax, with
logit parity against transformers' own models, tokenizer parity, and init_checkpoint."""
import functools
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from electra_jax import checkpoint
from electra_jax import convert
from electra_jax import defaults
from electra_jax import main as main_lib
from electra_jax import model as model_lib
from electra_jax import tokenization
from electra_jax.errors import UserError

torch = pytest.importorskip('torch')  # test extras: for transformers' reference models only
transformers = pytest.importorskip('transformers')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5
WORDS = ('the a cat dog sat ran on under mat log big small red blue and then it was happy sad '
         'hello world un ##aff ##able cafe Café play walk jump ##s ##ing ##ed 中 文 日 本 1 2 ##0 '
         'naive résumé').split()
PUNCTUATION = list('.,!?\'"-():;$')
VOCAB = list(tokenization.SPECIAL_TOKENS) + PUNCTUATION + WORDS
VOCAB += [f'[unused{i}]' for i in range(100 - len(VOCAB))]
VOCAB_SIZE = 100
MEASURED = {}  # max abs logit differences, printed at the end (pytest -s)


def hf_configs():
  """A tiny ELECTRA pair: embedding 16 != hidden 32 (projected), generator hidden 16 with the
  reference's derived sizes (heads = max(1, 16 // 64), FFN = 4 x 16)."""
  common = dict(vocab_size=VOCAB_SIZE, embedding_size=16, num_hidden_layers=2,
                max_position_embeddings=32, type_vocab_size=2, hidden_act='gelu',
                layer_norm_eps=1e-12)
  disc = transformers.ElectraConfig(hidden_size=32, num_attention_heads=2, intermediate_size=37,
                                    **common)
  gen = transformers.ElectraConfig(hidden_size=16, num_attention_heads=1, intermediate_size=64,
                                   **common)
  return disc, gen


def randomized(model):
  """Every weight random and O(0.3), LayerNorm scales near 1: a wrong mapping of any tensor (a bias,
  a LayerNorm, a transpose) changes the logits."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith('LayerNorm.weight') else 0.0))
  return model.eval()


@pytest.fixture(scope='module')
def hf_dir(tmp_path_factory):
  """HF discriminator/ and generator/ (safetensors) sharing one embedding table, as ELECTRA's do."""
  torch.manual_seed(0)
  disc_config, gen_config = hf_configs()
  disc = randomized(transformers.ElectraForPreTraining(disc_config))
  gen = randomized(transformers.ElectraForMaskedLM(gen_config))
  gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
  gen.tie_weights()
  root = tmp_path_factory.mktemp('hf')
  for name, model in (('discriminator', disc), ('generator', gen)):
    model.save_pretrained(str(root / name))
    (root / name / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  return str(root)


@pytest.fixture(scope='module')
def inputs():
  """Token ids, an attention mask with padding, two segments, and masked positions."""
  rng = np.random.default_rng(0)
  ids = rng.integers(5, VOCAB_SIZE, size=(2, 12)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  ids[1, 8:] = 0
  types = np.zeros_like(ids)
  types[:, 6:] = 1
  types[1, 8:] = 0
  positions = np.array([[1, 4, 10], [0, 3, 7]], np.int32)
  return ids, mask, types, positions


def load_hf(directory, kind):
  cls = transformers.ElectraForPreTraining if kind == 'discriminator' else \
      transformers.ElectraForMaskedLM
  model, info = cls.from_pretrained(directory, output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys'], info
  return model.eval()


def hf_logits(directory, inputs):
  ids, mask, types, positions = (torch.tensor(np.asarray(x, np.int64)) for x in inputs)
  with torch.no_grad():
    disc = load_hf(os.path.join(directory, 'discriminator'), 'discriminator')(
        input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    gen = load_hf(os.path.join(directory, 'generator'), 'generator')(
        input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
  return disc, np.take_along_axis(gen, np.asarray(positions)[:, :, None], axis=1)


def our_logits(model_config, disc_params, gen_params, inputs):
  ids, mask, types, positions = inputs
  model = model_lib.ElectraPretrainer(model_config)
  apply = jax.jit(model.apply, static_argnames='method')  # one compile beats op-by-op on CPU
  disc = apply({'params': disc_params}, ids, mask, types, method='discriminator_logits')
  gen = apply({'params': gen_params}, ids, mask, types, positions, method='generator_logits')
  return np.asarray(disc), np.asarray(gen)


def max_diff(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_trees_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


# ---- HF -> electra_jax -> HF.


def test_hf_import_gives_hf_logits(hf_dir, inputs):
  w = convert.read(hf_dir)
  m = w.model
  assert (m.vocab_size, m.embedding_size, m.hidden_size, m.num_layers, m.num_heads,
          m.intermediate_size, m.max_position_embeddings, m.type_vocab_size) == (
              VOCAB_SIZE, 16, 32, 2, 2, 37, 32, 2)
  assert m.generator_fraction == 0.5 and m.layer_norm_eps == 1e-12
  assert not w.untied_generator_embeddings and w.vocab['vocab_kind'] == 'wordpiece'
  ours = our_logits(m, w.discriminator, w.generator, inputs)
  theirs = hf_logits(hf_dir, inputs)
  assert np.abs(theirs[0]).max() > 0.5 and np.abs(theirs[1]).max() > 0.5  # not trivially small
  MEASURED['HF->ours disc'] = max_diff(ours[0], theirs[0])
  MEASURED['HF->ours gen'] = max_diff(ours[1], theirs[1])
  assert MEASURED['HF->ours disc'] <= ATOL and MEASURED['HF->ours gen'] <= ATOL


def test_export_to_hf_loads_in_transformers_and_round_trips_exactly(hf_dir, inputs, tmp_path):
  pretrained = str(tmp_path / 'pretrained')
  convert.convert('hf', 'electra_jax', hf_dir, pretrained)
  # checkpoint.py reads the imported weights as its own export.
  model_config, weights, vocab = checkpoint.load_pretrained(pretrained)
  assert set(weights['discriminator']) == set(checkpoint.DISCRIMINATOR_KEYS)
  assert set(weights['generator']) == {'embeddings', 'generator', 'generator_predictions'}
  assert vocab['vocab_path'] == os.path.join(pretrained, 'vocab.txt') and vocab['mask_id'] == 4

  out = str(tmp_path / 'hf_out')
  convert.convert('electra_jax', 'hf', str(tmp_path), out)  # a workdir holding pretrained/
  assert sorted(os.listdir(out)) == ['discriminator', 'generator']
  with open(os.path.join(out, 'generator', 'config.json')) as f:
    config = json.load(f)
  assert config['model_type'] == 'electra' and config['architectures'] == ['ElectraForMaskedLM']
  theirs = hf_logits(out, inputs)
  ours = our_logits(model_config, weights['discriminator'], weights['generator'], inputs)
  MEASURED['ours->HF disc'] = max_diff(ours[0], theirs[0])
  MEASURED['ours->HF gen'] = max_diff(ours[1], theirs[1])
  assert MEASURED['ours->HF disc'] <= ATOL and MEASURED['ours->HF gen'] <= ATOL

  # electra_jax -> HF -> electra_jax is exact.
  back = convert.read(out)
  assert_trees_bitwise_equal(back.discriminator, weights['discriminator'])
  assert_trees_bitwise_equal(back.generator, weights['generator'])
  assert back.model.to_dict() == model_config.to_dict()

  # The exported tokenizer is ours.
  text = 'Hello, WORLD! The cafés played; unaffable 中文 zzz.'
  ours_tok = tokenization.load_tokenizer(os.path.join(pretrained, 'vocab.txt'))
  for cls in (transformers.AutoTokenizer, transformers.ElectraTokenizerFast):
    hf_tok = cls.from_pretrained(os.path.join(out, 'discriminator'))
    assert hf_tok.tokenize(text) == ours_tok.tokenize(text)
    assert hf_tok(text)['input_ids'] == [ours_tok.cls_id] + ours_tok.encode(text) + [
        ours_tok.sep_id]


def test_generator_with_tables_of_its_own_width(inputs, tmp_path):
  """The original's untied_generator_embeddings: the generator's tables as wide as its hidden size
  (16, no projection) beside the discriminator's (16 -> 32 projected). HF -> ours gives HF's
  logits, ours -> HF -> ours is exact, and the model config says which tables are whose."""
  torch.manual_seed(1)
  disc_config, gen_config = hf_configs()
  disc_config.embedding_size = 24
  disc = randomized(transformers.ElectraForPreTraining(disc_config))
  gen = randomized(transformers.ElectraForMaskedLM(gen_config))  # embedding 16 = hidden 16
  for name, model in (('discriminator', disc), ('generator', gen)):
    model.save_pretrained(str(tmp_path / 'hf' / name))
    (tmp_path / 'hf' / name / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  w = convert.read(str(tmp_path / 'hf'))
  assert w.untied_generator_embeddings and w.model.generator_embedding_size == 0
  assert w.generator['embeddings']['word_embeddings']['embedding'].shape == (VOCAB_SIZE, 16)
  assert 'embeddings_project' not in w.generator['generator']
  ids, mask, types, positions = inputs
  ours_disc = model_lib.ElectraPretrainer(w.model).apply(
      {'params': w.discriminator}, ids, mask, types, method='discriminator_logits')
  # A standalone generator's `embeddings` are its own tables: a model config of their width.
  ours_gen = model_lib.ElectraPretrainer(model_lib.generator_embeddings_config(w.model)).apply(
      {'params': w.generator}, ids, mask, types, positions, method='generator_logits')
  theirs = hf_logits(str(tmp_path / 'hf'), inputs)
  assert max_diff(ours_disc, theirs[0]) <= ATOL and max_diff(ours_gen, theirs[1]) <= ATOL
  convert.write(w, 'hf', str(tmp_path / 'out'))
  with open(tmp_path / 'out' / 'generator' / 'config.json') as f:
    assert json.load(f)['embedding_size'] == 16
  back = convert.read(str(tmp_path / 'out'))
  assert_trees_bitwise_equal(back.generator, w.generator)
  assert back.untied_generator_embeddings and back.model.to_dict() == w.model.to_dict()


def test_hf_pytorch_bin_and_a_single_model_dir(hf_dir, inputs, tmp_path):
  """A legacy pytorch_model.bin discriminator alone: no generator in the result."""
  model = transformers.ElectraForPreTraining.from_pretrained(os.path.join(hf_dir, 'discriminator'))
  (tmp_path / 'd').mkdir()
  torch.save(model.state_dict(), str(tmp_path / 'd' / 'pytorch_model.bin'))
  model.config.to_json_file(str(tmp_path / 'd' / 'config.json'))
  w = convert.read(str(tmp_path / 'd'))
  assert w.generator is None and w.kinds() == ['discriminator']
  reference = convert.read(hf_dir)
  assert_trees_bitwise_equal(w.discriminator, reference.discriminator)


def write_safetensors(directory, tensors):
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  safetensors.numpy.save_file(tensors, os.path.join(directory, 'model.safetensors'),
                              metadata={'format': 'pt'})


def test_hf_missing_unexpected_or_misshaped_weight_is_a_user_error(hf_dir, tmp_path):
  source = os.path.join(hf_dir, 'discriminator')
  tensors = convert.read_hf_tensors(source)
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'config.json').write_text(open(os.path.join(source, 'config.json')).read())

  missing = {k: v for k, v in tensors.items() if k != 'electra.encoder.layer.1.output.dense.bias'}
  write_safetensors(str(broken), missing)
  with pytest.raises(UserError, match=r'lacks the variable electra\.encoder\.layer\.1\.output\.'
                     r'dense\.bias \(shape \[32\]'):
    convert.read(str(broken))

  write_safetensors(str(broken), {**tensors, 'electra.pooler.dense.weight': np.zeros((3, 4))})
  with pytest.raises(UserError, match=r'unexpected variable electra\.pooler\.dense\.weight with '
                     r'shape \[3, 4\]'):
    convert.read(str(broken))

  write_safetensors(str(broken), {**tensors, 'electra.encoder.layer.0.intermediate.dense.weight':
                                  np.zeros((36, 32), np.float32)})
  with pytest.raises(UserError, match=r'intermediate\.dense\.weight has shape \[36, 32\] but this '
                     r'model needs \[37, 32\]'):
    convert.read(str(broken))


# ---- Google TF1 checkpoints.


def tf1_name(hf_name, scope):
  """The reference's variable name (modeling.py / run_pretraining.py) of a HF tensor name."""
  name = re.sub(r'encoder\.layer\.(\d+)\.', r'encoder.layer_\1.', hf_name)
  name = name.replace('electra.', f'{scope}/', 1).replace('.', '/')
  name = name.replace('LayerNorm/weight', 'LayerNorm/gamma').replace('LayerNorm/bias',
                                                                       'LayerNorm/beta')
  name = re.sub(r'_embeddings/weight$', '_embeddings', name)
  name = name.replace('dense_prediction', 'dense_1')  # tf.layers.dense's default names
  name = name.replace('generator_lm_head/bias', 'generator_predictions/output_bias')
  return name.replace('/weight', '/kernel')


def tf1_variables(hf_dir):
  """{TF1 name: array} of the HF pair: TF Dense kernels are [in, out]; the generator's embeddings
  are the shared `electra/embeddings`."""
  variables = {}
  for kind, scope in (('discriminator', 'electra'), ('generator', 'generator')):
    for name, value in convert.read_hf_tensors(os.path.join(hf_dir, kind)).items():
      if kind == 'generator' and name.startswith('electra.embeddings.'):
        continue
      if name == 'generator_lm_head.weight':
        continue
      is_kernel = value.ndim == 2 and not name.endswith('_embeddings.weight')
      variables[tf1_name(name, scope)] = np.ascontiguousarray(value.T if is_kernel else value)
  return variables


def write_tf1_checkpoint(prefix, variables):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  saver = tf.compat.v1.train.Saver(var_list={n: tf.Variable(v) for n, v in variables.items()})
  saver.save(None, prefix, write_meta_graph=False)
  return prefix


@pytest.fixture(scope='module')
def tf1_prefix(hf_dir, tmp_path_factory):
  variables = tf1_variables(hf_dir)
  assert 'electra/encoder/layer_1/attention/self/query/kernel' in variables
  assert 'generator/encoder/layer_0/attention/self/query/kernel' in variables
  assert 'discriminator_predictions/dense_1/bias' in variables
  # Optimizer slots and the step counter, as in Google's checkpoints: ignored.
  for name in list(variables)[:6]:
    variables[f'{name}/adam_m'] = np.zeros_like(variables[name])
    variables[f'{name}/adam_v'] = np.ones_like(variables[name])
  variables['global_step'] = np.int64(1000)
  directory = tmp_path_factory.mktemp('tf1')
  (directory / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  return write_tf1_checkpoint(str(directory / 'model.ckpt-1000'), variables)


def test_tf1_checkpoint_gives_hf_logits(tf1_prefix, hf_dir, inputs):
  w = convert.read(tf1_prefix, num_heads=2)  # heads aren't stored in a TF1 checkpoint
  assert w.model.generator_fraction == 0.5 and w.model.intermediate_size == 37
  assert w.untied_generator and not w.untied_generator_embeddings
  assert w.vocab['vocab_size'] == VOCAB_SIZE
  ours = our_logits(w.model, w.discriminator, w.generator, inputs)
  theirs = hf_logits(hf_dir, inputs)
  MEASURED['TF1->ours disc'] = max_diff(ours[0], theirs[0])
  MEASURED['TF1->ours gen'] = max_diff(ours[1], theirs[1])
  assert MEASURED['TF1->ours disc'] <= ATOL and MEASURED['TF1->ours gen'] <= ATOL
  # The same weights as the HF import, bit for bit (the folder works as well as the prefix).
  from_hf = convert.read(hf_dir)
  from_folder = convert.read(os.path.dirname(tf1_prefix), num_heads=2)
  for w2 in (from_hf, from_folder):
    assert_trees_bitwise_equal(w.discriminator, w2.discriminator)
    assert_trees_bitwise_equal(w.generator, w2.generator)


def test_tf1_unexpected_missing_or_misshaped_variable_is_a_user_error(hf_dir, tmp_path):
  variables = tf1_variables(hf_dir)
  extra = dict(variables, **{'electra/encoder/layer_0/attention/self/rotary': np.zeros(4)})
  with pytest.raises(UserError, match=r'unexpected variable electra/encoder/layer_0/attention/self/'
                     r'rotary with shape \[4\]'):
    convert.read(write_tf1_checkpoint(str(tmp_path / 'extra' / 'ckpt'), extra), 'tf1', 2)

  missing = {k: v for k, v in variables.items() if k != 'generator_predictions/LayerNorm/beta'}
  with pytest.raises(UserError, match=r'lacks the variable generator_predictions/LayerNorm/beta '
                     r'\(shape \[16\]'):
    convert.read(write_tf1_checkpoint(str(tmp_path / 'missing' / 'ckpt'), missing), 'tf1', 2)

  bad = dict(variables, **{'generator/encoder/layer_1/intermediate/dense/kernel':
                           np.zeros((16, 60), np.float32)})
  with pytest.raises(UserError, match=r'generator/encoder/layer_1/intermediate/dense/kernel has '
                     r'shape \[16, 60\] but this model needs \[16, 64\]'):
    convert.read(write_tf1_checkpoint(str(tmp_path / 'bad' / 'ckpt'), bad), 'tf1', 2)


# ---- Tokenizer parity with transformers.

PARITY_TEXT = ('Héllo, WORLD! The Café\'s cats were playing -- unaffable zzqx 中文日本語 naïve '
               'RÉSUMÉ 12.50$ (walked) Ωmega\ttab  spaces\u00a0nbsp ＡＢＣ 😀 a-b_c x\u200by '
               'hello' + 'o' * 120 + ' Jumping playeds')


def slow_tokenizer_class():
  """The pure-Python BERT tokenizer: ElectraTokenizer before transformers 5, BertTokenizerLegacy
  after (where ElectraTokenizer is the Rust one)."""
  try:
    legacy = importlib.import_module('transformers.models.bert.tokenization_bert_legacy')
    return legacy.BertTokenizerLegacy
  except ImportError:
    return transformers.ElectraTokenizer


@pytest.mark.parametrize('do_lower_case', [True, False])
def test_wordpiece_tokenizer_matches_transformers(tmp_path, do_lower_case):
  path = tmp_path / 'vocab.txt'
  path.write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  ours = tokenization.load_tokenizer(str(path), do_lower_case)
  tokens = ours.tokenize(PARITY_TEXT)
  assert '[UNK]' in tokens and '中' in tokens and len(tokens) > 20
  hf_fast = transformers.ElectraTokenizerFast.from_pretrained(str(tmp_path),
                                                              do_lower_case=do_lower_case)
  hf_slow = slow_tokenizer_class()(str(path), do_lower_case=do_lower_case)
  for hf in (hf_fast, hf_slow):
    assert hf.tokenize(PARITY_TEXT) == tokens, type(hf).__name__
    assert hf.encode(PARITY_TEXT, add_special_tokens=False) == ours.encode(PARITY_TEXT)


# ---- Continued pre-training from an imported checkpoint (config.init_checkpoint).

CORPUS_WORDS = dict(size=['big', 'small', 'red', 'blue'], animal=['cat', 'dog'],
                    verb=['sat', 'ran'], place=['on', 'under'], thing=['mat', 'log'],
                    mood=['happy', 'sad'])


def init_config(data_dir, corpus_dir, init_checkpoint, **overrides):
  settings = {'model.embedding_size': 16, 'model.intermediate_size': 37, **overrides}
  c = tiny_config(vocab_size=VOCAB_SIZE, **settings)
  c.init_checkpoint = init_checkpoint
  c.data.data_dir = data_dir
  c.data.corpus = os.path.join(corpus_dir, 'corpus.txt')
  c.data.vocab = os.path.join(corpus_dir, 'vocab.txt')
  c.data.num_shards = 1
  c.data.num_processes = 1
  c.data.eval_fraction = 0.1
  c.data.shuffle_buffer = 16
  return c


@pytest.fixture(scope='module')
def corpus_dir(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('corpus')
  rng = random.Random(0)
  pick = lambda k: rng.choice(CORPUS_WORDS[k])
  docs = ['\n'.join(f'the {pick("size")} {pick("animal")} {pick("verb")} {pick("place")} the '
                    f'{pick("thing")} and it was {pick("mood")}.'
                    for _ in range(rng.randint(2, 5))) for _ in range(30)]
  (tmp / 'corpus.txt').write_text('\n\n'.join(docs) + '\n')
  (tmp / 'vocab.txt').write_text('\n'.join(VOCAB) + '\n', encoding='utf-8')
  return str(tmp)


def test_training_starts_from_an_imported_hf_checkpoint(hf_dir, corpus_dir, inputs, tmp_path,
                                                        monkeypatch):
  imported = convert.read(hf_dir)
  given = {}
  real_initial_params = convert.initial_params

  def spy(*args, **kwargs):
    given['params'] = real_initial_params(*args, **kwargs)
    return given['params']
  monkeypatch.setattr(convert, 'initial_params', spy)

  config = init_config(str(tmp_path / 'data'), corpus_dir, hf_dir, num_train_steps=2,
                       checkpoint_every_steps=1, eval_every_steps=2, eval_steps=1)
  main_lib.run('train', config, str(tmp_path / 'run'))  # builds the data, then trains

  params = given['params']
  assert 'generator_embeddings' not in params  # one table, seen by both models
  assert_trees_bitwise_equal(params['embeddings'], imported.discriminator['embeddings'])
  assert_trees_bitwise_equal(params['embeddings'], imported.generator['embeddings'])
  for key in checkpoint.DISCRIMINATOR_KEYS:
    assert_trees_bitwise_equal(params[key], imported.discriminator[key])
  for key in ('generator', 'generator_predictions'):
    assert_trees_bitwise_equal(params[key], imported.generator[key])

  # Step 0's learning rate is 0 (warmup), so the step-1 checkpoint holds the step-0 params: the
  # run really trained from them, and both halves reproduce the HF models through the one table.
  manager = checkpoint.checkpoint_manager(str(tmp_path / 'run'), config)
  step1 = manager.restore(1)['params']
  manager.close()
  assert_trees_bitwise_equal(jax.tree.map(np.asarray, step1), params)
  disc_params, gen_params = checkpoint.split_pretrained(step1, config.model)
  ours = our_logits(config.model, disc_params, gen_params, inputs)
  theirs = hf_logits(hf_dir, inputs)
  assert max_diff(ours[0], theirs[0]) <= ATOL and max_diff(ours[1], theirs[1]) <= ATOL


def test_gdes_run_exports_to_hf_and_imports_back_exactly(hf_dir, inputs, tmp_path):
  """embedding_sharing='gdes': the export (summed tables) gives transformers the discriminator
  and generator logits of the gdes model; init_checkpoint into a gdes config keeps the imported
  discriminator's tables exact (E_delta = imported - generator's)."""
  config = init_config('', '', '', **{'model.embedding_sharing': 'gdes'})
  params = random_params(config)
  checkpoint.export_pretrained(str(tmp_path / 'pretrained'), params, config,
                               convert.read(hf_dir).vocab)
  convert.convert('electra_jax', 'hf', str(tmp_path / 'pretrained'), str(tmp_path / 'hf'))
  model = model_lib.make_pretrainer(config)
  ids, mask, types, positions = inputs
  disc = model.apply({'params': params}, ids, mask, types, method='discriminator_logits')
  gen = model.apply({'params': params}, ids, mask, types, positions, method='generator_logits')
  theirs = hf_logits(str(tmp_path / 'hf'), inputs)
  # (logits ~15 from N(0, 1) weights: float32 rounding of the table sum is ~1e-6 relative)
  np.testing.assert_allclose(disc, theirs[0], rtol=1e-5, atol=ATOL)
  np.testing.assert_allclose(gen, theirs[1], rtol=1e-5, atol=ATOL)

  config.init_checkpoint = str(tmp_path / 'pretrained')
  fresh = random_params(config)
  imported = convert.initial_params(config, jax.tree.map(lambda x: x + 1.0, fresh))
  again = model.apply({'params': imported}, ids, mask, types, method='discriminator_logits')
  np.testing.assert_allclose(again, disc, rtol=1e-5, atol=ATOL)


def test_files_of_the_old_layout_still_read(tmp_path):
  """Before the generator's tying moved from objective.* to model.*, pretrained/config.json kept
  it under 'objective' and a workdir's config.json had objective.embedding_sharing etc.: both read
  as today's layout (defaults.upgrade), and what is written again has the new one."""
  config = init_config('', '', '', **{'model.untied_generator_embeddings': True})
  params = random_params(config)
  new, old = str(tmp_path / 'new'), str(tmp_path / 'old')
  checkpoint.export_pretrained(new, params, config, {})
  shutil.copytree(new, old)
  with open(os.path.join(new, 'config.json')) as f:
    info = json.load(f)
  assert 'objective' not in info and info['model']['embedding_sharing'] == 'separate'
  # As export_pretrained wrote it then: the tying under 'objective', the model without it.
  for key in ('embedding_sharing', 'untied_generator_embeddings', 'untied_generator'):
    del info['model'][key]
  info['objective'] = {'untied_generator_embeddings': True, 'untied_generator': True}
  with open(os.path.join(old, 'config.json'), 'w') as f:
    json.dump(info, f)
  w_new, w_old = convert.read(new), convert.read(old)
  for w in (w_new, w_old):
    assert w.untied_generator_embeddings and w.untied_generator
    assert model_lib.embedding_sharing(w.model) == 'separate' and w.model.untied_generator
    assert_trees_bitwise_equal(w.generator, w_new.generator)
    assert_trees_bitwise_equal(w.discriminator, w_new.discriminator)
  model_config, _, _ = checkpoint.load_pretrained(old)
  assert model_config.untied_generator_embeddings and model_config.hidden_size == 32
  convert.write(w_old, 'electra_jax', str(tmp_path / 'again'))
  with open(tmp_path / 'again' / 'config.json') as f:
    again = json.load(f)
  assert 'objective' not in again and again['model']['untied_generator_embeddings']
  # A generator tied to the discriminator (objective.untied_generator=False then).
  info['objective'] = {'untied_generator_embeddings': False, 'untied_generator': False}
  with open(os.path.join(old, 'config.json'), 'w') as f:
    json.dump(info, f)
  w = convert.read(old)
  assert not w.untied_generator and not w.untied_generator_embeddings
  # Initialized from the old layout: a 'separate' run gets the exported weights back exactly.
  info['objective'] = {'untied_generator_embeddings': True, 'untied_generator': True}
  with open(os.path.join(old, 'config.json'), 'w') as f:
    json.dump(info, f)
  config.init_checkpoint = old
  imported = convert.initial_params(config, jax.tree.map(lambda x: x + 1.0, params))
  assert_trees_bitwise_equal(imported, params)

  # A workdir's config.json (the whole config): the moved keys under 'objective'; a value already
  # under the new name wins.
  today = config.to_dict()
  then = json.loads(json.dumps(today))
  for key in ('embedding_sharing', 'untied_generator_embeddings', 'untied_generator'):
    then['objective'][key] = then['model'].pop(key)
  upgraded = defaults.upgrade(then)
  assert upgraded == json.loads(json.dumps(today)) and 'untied_generator' in then['objective']
  assert model_lib.make_pretrainer(ml_collections.ConfigDict(upgraded)).embedding_sharing == (
      'separate')
  then['model']['embedding_sharing'] = 'gdes'
  assert defaults.upgrade(then)['model']['embedding_sharing'] == 'gdes'


def random_params(config):
  """Random params of the config's shapes (numpy: no compile needed)."""
  rng = np.random.default_rng(1)
  init = functools.partial(model_lib.init_params, model_lib.make_pretrainer(config))
  shapes = jax.eval_shape(init, jax.random.key(1))
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_init_checkpoint_without_generator_or_of_another_shape(hf_dir, corpus_dir, tmp_path,
                                                               caplog):
  initial = random_params(init_config('', corpus_dir, ''))
  vocab = os.path.join(corpus_dir, 'vocab.txt')

  config = init_config('', corpus_dir, os.path.join(hf_dir, 'discriminator'))
  with caplog.at_level('WARNING'):
    params = convert.initial_params(config, initial, vocab)
  assert 'no generator: the generator keeps its random initialization' in caplog.text
  assert_trees_bitwise_equal(params['generator'], initial['generator'])
  disc = convert.read(os.path.join(hf_dir, 'discriminator')).discriminator
  assert_trees_bitwise_equal(params['discriminator'], disc['discriminator'])

  config = init_config('', corpus_dir, hf_dir, **{'model.intermediate_size': 40})
  with pytest.raises(UserError, match=r'discriminator/layer_0/intermediate/bias has shape '
                     r'\[37\] there but \[40\] in this config'):
    convert.initial_params(config, random_params(config), vocab)

  other_vocab = tmp_path / 'vocab.txt'
  other_vocab.write_text('\n'.join(reversed(VOCAB)) + '\n', encoding='utf-8')
  with pytest.raises(UserError, match='was trained with the vocabulary'):
    convert.initial_params(init_config('', corpus_dir, hf_dir), initial, str(other_vocab))


# ---- The command.


def run_convert(*args):
  return subprocess.run([sys.executable, '-m', 'electra_jax.convert', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


def test_command_converts_tf1_to_hf_and_reports_bad_input(tf1_prefix, hf_dir, inputs, tmp_path):
  out = str(tmp_path / 'out')
  result = run_convert('--from=tf1', '--to=hf', f'--input={tf1_prefix}', f'--output={out}',
                       '--num_heads=2')
  assert result.returncode == 0, result.stderr
  theirs, ours = hf_logits(hf_dir, inputs), hf_logits(out, inputs)
  assert max_diff(ours[0], theirs[0]) <= ATOL and max_diff(ours[1], theirs[1]) <= ATOL

  result = run_convert('--from=hf', '--to=electra_jax', f'--input={tmp_path / "nope"}',
                       f'--output={out}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: {tmp_path / "nope"} does not exist'


def test_report_measured_differences():
  print('\nmax abs logit differences: ' + ', '.join(f'{k} {v:.2e}' for k, v in MEASURED.items()))
