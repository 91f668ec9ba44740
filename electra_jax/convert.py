r"""Import and export checkpoints: HF transformers ELECTRA, Google's TF1 ELECTRA, electra_jax.

Commands (`--from` and `--to` name the formats; a bad input is one `error: ...` line, exit 1):

  # HF -> electra_jax `pretrained/` dir (config.json, discriminator.msgpack, generator.msgpack,
  # vocab.txt). INPUT: one HF model dir (ElectraForPreTraining or ElectraForMaskedLM), a dir
  # holding discriminator/ and generator/, or DISC_DIR,GEN_DIR.
  python -m electra_jax.convert --from=hf --to=electra_jax --input=HF_DIR --output=OUT

  # Google TF1 checkpoint (the prefix, e.g. electra_small/electra_small, or its folder) ->
  # electra_jax. The attention head count is not in a TF1 checkpoint: --num_heads (default
  # hidden_size // 64, as in every released model). vocab.txt beside the checkpoint is taken along.
  python -m electra_jax.convert --from=tf1 --to=electra_jax --input=PREFIX --output=OUT \
      [--num_heads=N] [--nodo_lower_case]

  # electra_jax `pretrained/` dir (or a workdir holding one) -> OUT/discriminator and
  # OUT/generator, each loadable by transformers' ElectraForPreTraining / ElectraForMaskedLM
  # .from_pretrained (config.json, model.safetensors, and vocab.txt + tokenizer_config.json
  # when the vocabulary is WordPiece).
  python -m electra_jax.convert --from=electra_jax --to=hf --input=WORKDIR --output=OUT

  # Any other pair works the same way (e.g. --from=tf1 --to=hf).

Continued pre-training from an imported checkpoint: `--config.init_checkpoint=PATH` (a pretrained/
dir, a workdir, a HF dir or a TF1 prefix; see `initial_params`).

Conversion needs neither torch nor transformers: safetensors are read and written with the
safetensors numpy API (only a legacy `pytorch_model.bin` needs torch to be read).

Name mapping (electra_jax param path <-> HF <-> TF1), one layer shown:
  embeddings/word_embeddings/embedding   electra.embeddings.word_embeddings.weight
                                         electra/embeddings/word_embeddings
  embeddings/LayerNorm/{scale,bias}      electra.embeddings.LayerNorm.{weight,bias}
                                         electra/embeddings/LayerNorm/{gamma,beta}
  discriminator/embeddings_project       electra.embeddings_project     electra/embeddings_project
  discriminator/layer_N/query            electra.encoder.layer.N.attention.self.query
                                         electra/encoder/layer_N/attention/self/query
  generator/...                          (the generator model's electra.*)  generator/...
  discriminator_predictions/dense_prediction   same in HF; TF1 dense_1
  generator_predictions/output_bias      generator_lm_head.bias
                                         generator_predictions/output_bias
Flax Dense kernels are [in, out] like TF's; PyTorch Linear weights are [out, in] (transposed).
"""
import dataclasses
import json
import os
import sys

from absl import logging
from flax import traverse_util
import jax
import ml_collections
import numpy as np
import safetensors.numpy

from electra_jax import checkpoint
from electra_jax import defaults
from electra_jax import model as model_lib
from electra_jax import paths
from electra_jax import tokenization
from electra_jax.errors import UserError

KINDS = ('discriminator', 'generator')
# Top-level keys of each model's standalone params (checkpoint.split_pretrained).
KIND_KEYS = {'discriminator': checkpoint.DISCRIMINATOR_KEYS,
             'generator': ('embeddings', 'generator', 'generator_predictions')}
HF_ARCHITECTURES = {'discriminator': 'ElectraForPreTraining', 'generator': 'ElectraForMaskedLM'}

# Sub-modules of one transformer layer: electra_jax name -> (HF name, TF1 name).
_LAYER_MODULES = {
    'query': ('attention.self.query', 'attention/self/query'),
    'key': ('attention.self.key', 'attention/self/key'),
    'value': ('attention.self.value', 'attention/self/value'),
    'attention_output': ('attention.output.dense', 'attention/output/dense'),
    'attention_LayerNorm': ('attention.output.LayerNorm', 'attention/output/LayerNorm'),
    'intermediate': ('intermediate.dense', 'intermediate/dense'),
    'output': ('output.dense', 'output/dense'),
    'output_LayerNorm': ('output.LayerNorm', 'output/LayerNorm'),
}
_HF_LEAVES = {'kernel': 'weight', 'embedding': 'weight', 'scale': 'weight', 'bias': 'bias'}
# HF buffers that are not weights; the lm head weight is the (tied) word-embedding table.
_HF_IGNORED = ('electra.embeddings.position_ids', 'electra.embeddings.token_type_ids')
_HF_LM_HEAD = 'generator_lm_head.weight'
# What HF's ElectraConfig assumes for a key that config.json leaves out.
_HF_DEFAULTS = {'vocab_size': 30522, 'embedding_size': 128, 'hidden_size': 256,
                'num_hidden_layers': 12, 'num_attention_heads': 4, 'intermediate_size': 1024,
                'hidden_act': 'gelu',
                'hidden_dropout_prob': 0.1, 'attention_probs_dropout_prob': 0.1,
                'max_position_embeddings': 512, 'type_vocab_size': 2, 'initializer_range': 0.02,
                'layer_norm_eps': 1e-12}
# electra_jax model key -> HF ElectraConfig key, for both directions (the transformer's sizes are
# the discriminator's or the generator's: model.discriminator_size / generator_size).
_HF_CONFIG_KEYS = {'vocab_size': 'vocab_size', 'embedding_size': 'embedding_size',
                   'hidden_size': 'hidden_size', 'num_layers': 'num_hidden_layers',
                   'num_heads': 'num_attention_heads', 'intermediate_size': 'intermediate_size',
                   'max_position_embeddings': 'max_position_embeddings',
                   'type_vocab_size': 'type_vocab_size', 'dropout_rate': 'hidden_dropout_prob',
                   'attention_dropout_rate': 'attention_probs_dropout_prob',
                   'layer_norm_eps': 'layer_norm_eps', 'initializer_range': 'initializer_range'}
# TF1 optimizer state and counters: not weights.
_TF1_IGNORED_SUFFIXES = ('/adam_m', '/adam_v')
_TF1_IGNORED = ('global_step',)


@dataclasses.dataclass
class Weights:
  """A pre-trained ELECTRA in electra_jax's form, whatever it was read from.

  model: the electra_jax model config (`config.model`), with how the generator is tied:
    model.embedding_sharing 'shared' or 'separate' (the generator has its own embedding tables)
    and model.untied_generator (False when the generator IS the discriminator's transformer).
  discriminator / generator: standalone params (`KIND_KEYS`), or None where the source had none.
  vocab: vocabulary info as in pretrained/config.json ('vocab_path', 'vocab_kind', ...), or {}.
  """
  model: ml_collections.ConfigDict
  discriminator: dict | None
  generator: dict | None
  vocab: dict

  @property
  def untied_generator_embeddings(self) -> bool:
    return model_lib.embedding_sharing(self.model) != 'shared'

  @property
  def untied_generator(self) -> bool:
    return self.model.get('untied_generator', True)

  def kinds(self):
    return [k for k in KINDS if getattr(self, k) is not None]


# ---------------------------------------------------------------------------------------------
# Names and shapes.


def _leaf_path(path) -> str:
  return '/'.join(path)


def expected_shapes(model_config, untied_generator_embeddings: bool = False) -> dict:
  """{kind: {param path tuple: shape}} of the standalone discriminator and generator params (the
  generator's own tables, when untied, under its `embeddings` key)."""
  model = model_lib.ElectraPretrainer(
      model_config, embedding_sharing='separate' if untied_generator_embeddings else 'shared')
  seq_len = min(8, model_config.max_position_embeddings)
  shapes = jax.eval_shape(lambda: model_lib.init_params(model, jax.random.key(0), seq_len))
  flat = traverse_util.flatten_dict(shapes)
  gen_tables = 'generator_embeddings' if untied_generator_embeddings else 'embeddings'
  rename = {'discriminator': {}, 'generator': {gen_tables: 'embeddings'}}
  keys = {'discriminator': KIND_KEYS['discriminator'],
          'generator': (gen_tables, 'generator', 'generator_predictions')}
  return {kind: {(rename[kind].get(p[0], p[0]),) + p[1:]: tuple(s.shape)
                 for p, s in flat.items() if p[0] in keys[kind]} for kind in KINDS}


def hf_name(path) -> str:
  """The HF tensor name of an electra_jax param path (within its model's own file)."""
  top, *rest = path
  if top == 'embeddings':
    module, leaf = rest
    return f'electra.embeddings.{module}.{_HF_LEAVES[leaf]}'
  if top in KINDS:  # the transformer body
    if rest[0] == 'embeddings_project':
      return f'electra.embeddings_project.{_HF_LEAVES[rest[1]]}'
    layer, module, leaf = rest
    index = layer[len('layer_'):]
    return f'electra.encoder.layer.{index}.{_LAYER_MODULES[module][0]}.{_HF_LEAVES[leaf]}'
  if path == ('generator_predictions', 'output_bias'):
    return 'generator_lm_head.bias'
  module, leaf = rest
  return f'{top}.{module}.{_HF_LEAVES[leaf]}'


def _tf1_leaf(module: str, leaf: str) -> str:
  if module.endswith('LayerNorm'):
    return {'scale': 'gamma', 'bias': 'beta'}[leaf]
  return leaf


def tf1_name(path, body_scope: str = 'electra', embeddings_scope: str = 'electra') -> str:
  """The TF1 variable name of an electra_jax param path.

  body_scope: 'electra' for the discriminator, 'generator' for an untied generator.
  embeddings_scope: 'electra' (shared tables) or 'generator' (untied generator embeddings).
  """
  top, *rest = path
  if top == 'embeddings':
    module, leaf = rest
    if leaf == 'embedding':
      return f'{embeddings_scope}/embeddings/{module}'
    return f'{embeddings_scope}/embeddings/{module}/{_tf1_leaf(module, leaf)}'
  if top in KINDS:
    if rest[0] == 'embeddings_project':
      return f'{body_scope}/embeddings_project/{rest[1]}'
    layer, module, leaf = rest
    tf_module = _LAYER_MODULES[module][1]
    return f'{body_scope}/encoder/{layer}/{tf_module}/{_tf1_leaf(tf_module, leaf)}'
  if path == ('generator_predictions', 'output_bias'):
    return 'generator_predictions/output_bias'
  module, leaf = rest
  return f'{top}/{module}/{_tf1_leaf(module, leaf)}'


def _tf1_aliases(name: str) -> list[str]:
  """The reference's discriminator head is two unnamed tf.layers.dense: `dense`, `dense_1`
  (HF's converter renames the second to dense_prediction; either is read)."""
  if '/dense_prediction/' in name:
    return [name.replace('/dense_prediction/', '/dense_1/'), name]
  return [name]


def _is_hf_transposed(path) -> bool:
  return path[-1] == 'kernel'


def _shape_text(shape) -> str:
  return '[' + ', '.join(str(d) for d in shape) + ']'


def _import_tree(expected: dict, source: dict, name_of, transposed, where: str):
  """Reads `expected` ({path: shape}) from `source` ({name: lazy getter or array}).

  name_of(path) -> list of candidate names; transposed(path) -> bool. Returns (tree, used names).
  """
  flat, used = {}, set()
  for path, shape in expected.items():
    candidates = name_of(path)
    name = next((n for n in candidates if n in source), None)
    want = tuple(reversed(shape)) if transposed(path) else shape
    if name is None:
      raise UserError(f'{where} lacks the variable {candidates[0]} (shape {_shape_text(want)}, '
                      f'electra_jax {_leaf_path(path)})')
    value = source[name]
    value = value() if callable(value) else value
    if tuple(value.shape) != want:
      raise UserError(f'{where}: {name} has shape {_shape_text(value.shape)} but this model needs '
                      f'{_shape_text(want)} (electra_jax {_leaf_path(path)})')
    value = np.asarray(value, np.float32)
    flat[path] = np.ascontiguousarray(value.T) if transposed(path) else value
    used.add(name)
  return traverse_util.unflatten_dict(flat), used


def _check_unexpected(names, used, shape_of, where: str):
  unexpected = sorted(set(names) - set(used))
  if unexpected:
    more = f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''
    raise UserError(f'{where} has an unexpected variable {unexpected[0]} with shape '
                    f'{_shape_text(shape_of(unexpected[0]))}{more}; it is not part of an '
                    'electra_jax ELECTRA')


def trees_equal(a, b) -> bool:
  fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
  return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


# ---------------------------------------------------------------------------------------------
# Vocabulary.


def _found_vocab(directory: str, do_lower_case: bool) -> dict:
  path = paths.join(directory, 'vocab.txt')
  return tokenization.vocab_info(path, do_lower_case) if paths.isfile(path) else {}


# ---------------------------------------------------------------------------------------------
# HF transformers.


def _read_json(path: str) -> dict:
  try:
    with paths.open(path) as f:
      return json.load(f)
  except (*paths.error_types(), json.JSONDecodeError) as e:
    raise UserError(f'cannot read {path}: {e}') from None


def _read_torch_bin(path: str) -> dict:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f'{path} is a PyTorch pickle, which needs torch to be read: pip install torch, '
                    'or save the model with safetensors (model.safetensors)') from None
  with paths.local_copy(path) as local:  # torch reads local files only
    state = torch.load(local, map_location='cpu', weights_only=True)
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}


def read_hf_tensors(directory: str) -> dict:
  """{name: numpy array} of model.safetensors (sharded too) or pytorch_model.bin."""
  single = paths.join(directory, 'model.safetensors')
  index = single + '.index.json'
  if paths.isfile(single):
    files = [single]
  elif paths.isfile(index):
    shards = sorted(set(_read_json(index)['weight_map'].values()))
    files = [paths.join(directory, s) for s in shards]
  elif paths.isfile(paths.join(directory, 'pytorch_model.bin')):
    return _read_torch_bin(paths.join(directory, 'pytorch_model.bin'))
  else:
    raise UserError(f'{directory} holds no HF weights (model.safetensors or pytorch_model.bin)')
  tensors = {}
  for file in files:
    try:
      with paths.local_copy(file) as local:  # safetensors maps local files only
        tensors.update(safetensors.numpy.load_file(local))
    except (*paths.error_types(), ValueError, safetensors.SafetensorError) as e:
      raise UserError(f'cannot read {file}: {e}') from None
  return tensors


def _hf_kind(tensors: dict, directory: str) -> str:
  if any(n.startswith('discriminator_predictions.') for n in tensors):
    return 'discriminator'
  if any(n.startswith('generator_predictions.') for n in tensors):
    return 'generator'
  raise UserError(f'{directory} holds neither an ElectraForPreTraining '
                  '(discriminator_predictions.*) nor an ElectraForMaskedLM '
                  '(generator_predictions.*)')


def _hf_value(cfg: dict, key: str):
  return cfg.get(key, _HF_DEFAULTS[key])


def _check_hf_config(cfg: dict, directory: str):
  if cfg.get('model_type', 'electra') != 'electra':
    raise UserError(f"{directory}/config.json is a {cfg['model_type']!r} model, not 'electra'")
  if _hf_value(cfg, 'hidden_act') != 'gelu':
    raise UserError(f"{directory}/config.json has hidden_act {cfg['hidden_act']!r}; electra_jax "
                    "uses the exact GELU ('gelu') of ELECTRA")
  if cfg.get('position_embedding_type', 'absolute') != 'absolute':
    raise UserError(f'{directory}/config.json has position_embedding_type '
                    f"{cfg['position_embedding_type']!r}; electra_jax has absolute positions only")


def _model_config_from_hf(cfg: dict):
  """An electra_jax model config whose discriminator is the HF model of `cfg`."""
  m = defaults.model_config()
  for ours, theirs in _HF_CONFIG_KEYS.items():
    m[ours] = _hf_value(cfg, theirs)
  m.generator_fraction = 1.0
  return m


def _size_text(size: model_lib.TransformerSize) -> str:
  return (f'hidden {size.hidden_size}, {size.num_heads} heads, FFN {size.intermediate_size}, '
          f'{size.num_layers} layers')


def _with_generator(m, gen_cfg: dict, where: str):
  """`m` (from the discriminator) with generator_fraction set from the HF generator's config (and
  generator_embedding_size, for a generator with tables of its own width)."""
  gen = _model_config_from_hf(gen_cfg)
  for key in ('vocab_size', 'max_position_embeddings', 'type_vocab_size', 'layer_norm_eps'):
    if gen[key] != m[key]:
      raise UserError(f'{where}: the generator has {key} {gen[key]} but the discriminator '
                      f'{m[key]}; electra_jax shares them')
  m = ml_collections.ConfigDict(m.to_dict())
  m.generator_fraction = (1.0 if gen.hidden_size == m.hidden_size
                          else gen.hidden_size / m.hidden_size)
  if gen.embedding_size != m.embedding_size:  # untied tables (the original: as wide as the model)
    m.generator_embedding_size = 0 if gen.embedding_size == gen.hidden_size else gen.embedding_size
  got, derived = model_lib.discriminator_size(gen), model_lib.generator_size(m)
  if got != derived:
    raise UserError(f'{where}: the generator ({_size_text(got)}) is not the one electra_jax '
                    f'derives from generator_fraction {m.generator_fraction:g} '
                    f'({_size_text(derived)}: heads = max(1, hidden // 64), FFN = 4 x hidden, '
                    'same depth)')
  return m


def _hf_dirs(path: str) -> list[str]:
  if ',' in path:
    return [p for p in path.split(',') if p]
  if paths.isfile(paths.join(path, 'config.json')):
    return [path]
  subdirs = [paths.join(path, k) for k in KINDS
             if paths.isfile(paths.join(path, k, 'config.json'))]
  if not subdirs:
    raise UserError(f'{path} is not a HF model dir (no config.json) and holds no discriminator/ or '
                    'generator/ model dir')
  return subdirs


def _read_hf_model(directory: str):
  """-> (kind, config dict, tensors) of one HF ELECTRA model directory."""
  cfg = _read_json(paths.join(directory, 'config.json'))
  _check_hf_config(cfg, directory)
  tensors = read_hf_tensors(directory)
  return _hf_kind(tensors, directory), cfg, tensors


def _import_hf_model(kind: str, expected: dict, tensors: dict, where: str) -> dict:
  tree, used = _import_tree(expected, tensors, lambda p: [hf_name(p)], _is_hf_transposed, where)
  if kind == 'generator' and _HF_LM_HEAD in tensors:
    if not np.array_equal(np.asarray(tensors[_HF_LM_HEAD], np.float32),
                          tree['embeddings']['word_embeddings']['embedding']):
      raise UserError(f'{where}: {_HF_LM_HEAD} differs from the word embeddings; electra_jax ties '
                      'the generator output layer to them')
    used.add(_HF_LM_HEAD)
  used.update(_HF_IGNORED)
  _check_unexpected(tensors, used, lambda n: tensors[n].shape, where)
  return tree


def _hf_do_lower_case(directory: str) -> bool:
  path = paths.join(directory, 'tokenizer_config.json')
  return bool(_read_json(path).get('do_lower_case', True)) if paths.isfile(path) else True


def read_hf(path: str) -> Weights:
  """A HF ElectraForPreTraining and/or ElectraForMaskedLM (see `_hf_dirs` for `path`)."""
  models = {}
  for directory in _hf_dirs(path):
    kind, cfg, tensors = _read_hf_model(directory)
    if kind in models:
      raise UserError(f'{path}: two {HF_ARCHITECTURES[kind]} models ({models[kind][0]} and '
                      f'{directory})')
    models[kind] = (directory, cfg, tensors)
  own_width = False  # a generator whose tables differ in width from the discriminator's
  if 'discriminator' in models:
    m = _model_config_from_hf(models['discriminator'][1])
    if 'generator' in models:
      m = _with_generator(m, models['generator'][1], path)
      own_width = (_hf_value(models['generator'][1], 'embedding_size') != m.embedding_size)
  else:  # a generator alone: it is this config's (fraction 1.0) model
    m = _model_config_from_hf(models['generator'][1])
  shapes = expected_shapes(m, own_width)
  trees = {kind: _import_hf_model(kind, shapes[kind], tensors, directory)
           for kind, (directory, _, tensors) in models.items()}
  first_dir = models.get('discriminator', models.get('generator'))[0]
  w = Weights(m, trees.get('discriminator'), trees.get('generator'),
              _found_vocab(first_dir, _hf_do_lower_case(first_dir)))
  if w.discriminator and w.generator and (own_width or not trees_equal(
      w.discriminator['embeddings'], w.generator['embeddings'])):
    w.model.embedding_sharing = 'separate'
  return w


def _hf_config(m, kind: str, vocab: dict, untied_generator_embeddings: bool = False) -> dict:
  size = (model_lib.discriminator_size(m) if kind == 'discriminator'
          else model_lib.generator_size(m))
  embedding_size = (model_lib.generator_embeddings_config(m).embedding_size
                    if kind == 'generator' and untied_generator_embeddings else m.embedding_size)
  values = dict(m.to_dict(), embedding_size=embedding_size, hidden_size=size.hidden_size,
                num_layers=size.num_layers, num_heads=size.num_heads,
                intermediate_size=size.intermediate_size)
  return {
      'architectures': [HF_ARCHITECTURES[kind]],
      'model_type': 'electra',
      **{theirs: values[ours] for ours, theirs in _HF_CONFIG_KEYS.items()},
      'hidden_act': 'gelu',
      'pad_token_id': vocab.get('pad_id', 0),
      'position_embedding_type': 'absolute',
      'summary_type': 'first',
      'summary_use_proj': True,
      'summary_activation': 'gelu',
      'summary_last_dropout': 0.1,
      'tie_word_embeddings': True,
  }


def hf_tensors(tree: dict) -> dict:
  """Standalone electra_jax params of one model -> {HF name: array} (PyTorch layouts)."""
  out = {}
  for path, value in traverse_util.flatten_dict(tree).items():
    value = np.asarray(value, np.float32)
    out[hf_name(path)] = np.ascontiguousarray(value.T if _is_hf_transposed(path) else value)
  return out


def _write_hf_tokenizer(directory: str, vocab: dict, max_length: int):
  """vocab.txt + tokenizer_config.json: what ElectraTokenizer(Fast).from_pretrained reads."""
  path = vocab.get('vocab_path')
  if vocab.get('vocab_kind') != 'wordpiece' or not path:
    logging.warning('The vocabulary (%s) is not WordPiece: no HF tokenizer files written.',
                    path or 'none recorded')
    return
  if not paths.isfile(path):
    raise UserError(f'the vocabulary {path} recorded with the weights does not exist; pass '
                    '--vocab=PATH/vocab.txt')
  paths.copy(path, paths.join(directory, 'vocab.txt'))
  special = {'unk_token': '[UNK]', 'sep_token': '[SEP]', 'pad_token': '[PAD]',
             'cls_token': '[CLS]', 'mask_token': '[MASK]'}
  config = {'tokenizer_class': 'ElectraTokenizer', 'do_lower_case': bool(vocab['do_lower_case']),
            'strip_accents': None, 'tokenize_chinese_chars': True, 'model_max_length': max_length,
            **special}
  for name, content in (('tokenizer_config.json', config), ('special_tokens_map.json', special)):
    with paths.open(paths.join(directory, name), 'w') as f:
      json.dump(content, f, indent=2)


def write_hf(w: Weights, output: str) -> list[str]:
  """OUTPUT/discriminator and OUTPUT/generator as HF models; returns the dirs written."""
  written = []
  for kind in w.kinds():
    directory = paths.join(output, kind)
    paths.makedirs(directory)
    with paths.open(paths.join(directory, 'config.json'), 'w') as f:
      json.dump(_hf_config(w.model, kind, w.vocab, w.untied_generator_embeddings), f, indent=2)
    tmp = paths.join(directory, 'model.safetensors.tmp')
    with paths.local_output(tmp) as local:
      safetensors.numpy.save_file(hf_tensors(getattr(w, kind)), local, metadata={'format': 'pt'})
    paths.replace(tmp, paths.join(directory, 'model.safetensors'))
    _write_hf_tokenizer(directory, w.vocab, w.model.max_position_embeddings)
    written.append(directory)
  return written


# ---------------------------------------------------------------------------------------------
# Google's TF1 checkpoints.


def _tf1_reader(path: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.train.load_checkpoint(path)
  except (tf.errors.OpError, ValueError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'cannot read the TF1 checkpoint {path}: {first_line}') from None


def _tf1_is_weight(name: str) -> bool:
  return name not in _TF1_IGNORED and not name.endswith(_TF1_IGNORED_SUFFIXES)


def _tf1_shape(shapes: dict, name: str, where: str) -> tuple:
  if name not in shapes:
    raise UserError(f'{where} lacks the variable {name}')
  return tuple(shapes[name])


def _tf1_layers(shapes: dict, scope: str) -> int:
  prefix = f'{scope}/encoder/layer_'
  return len({n[len(prefix):].split('/')[0] for n in shapes if n.startswith(prefix)})


def _model_config_from_tf1(shapes: dict, gen_scope: str, num_heads: int, where: str):
  """Sizes from the variable shapes; heads (not stored) from `num_heads` or hidden // 64."""
  m = defaults.model_config()
  emb = 'electra/embeddings'
  m.vocab_size, m.embedding_size = _tf1_shape(shapes, f'{emb}/word_embeddings', where)
  m.max_position_embeddings = _tf1_shape(shapes, f'{emb}/position_embeddings', where)[0]
  m.type_vocab_size = _tf1_shape(shapes, f'{emb}/token_type_embeddings', where)[0]
  layer0 = 'electra/encoder/layer_0'
  m.hidden_size = _tf1_shape(shapes, f'{layer0}/attention/self/query/kernel', where)[1]
  m.intermediate_size = _tf1_shape(shapes, f'{layer0}/intermediate/dense/kernel', where)[1]
  m.num_layers = _tf1_layers(shapes, 'electra')
  m.num_heads = num_heads or max(1, m.hidden_size // 64)
  m.layer_norm_eps = 1e-12  # the reference's layer_norm
  m.generator_fraction = 1.0
  if gen_scope == 'generator':
    hidden = _tf1_shape(shapes, 'generator/encoder/layer_0/attention/self/query/kernel', where)[1]
    if hidden != m.hidden_size:
      m.generator_fraction = hidden / m.hidden_size
    if _tf1_layers(shapes, 'generator') != m.num_layers:
      raise UserError(f"{where}: the generator has {_tf1_layers(shapes, 'generator')} layers but "
                      f'the discriminator {m.num_layers}; electra_jax needs the same depth')
  if m.hidden_size % m.num_heads:
    raise UserError(f'{where}: hidden size {m.hidden_size} is not divisible by {m.num_heads} '
                    'heads; pass --num_heads')
  return m


def read_tf1(path: str, num_heads: int = 0, vocab: str = '', do_lower_case: bool = True) -> Weights:
  """A Google ELECTRA TF1 checkpoint (generator and discriminator together)."""
  reader = _tf1_reader(path)
  shapes = {n: s for n, s in reader.get_variable_to_shape_map().items() if _tf1_is_weight(n)}
  has = {'discriminator': any(n.startswith('discriminator_predictions/') for n in shapes),
         'generator': any(n.startswith('generator_predictions/') for n in shapes)}
  if not any(has.values()):
    raise UserError(f'{path} has no discriminator_predictions/ or generator_predictions/ '
                    'variables: not an ELECTRA pre-training checkpoint')
  # untied_generator=False in the reference: the generator is the `electra` transformer itself.
  gen_scope = ('generator' if any(n.startswith('generator/encoder/') for n in shapes)
               else 'electra')
  gen_emb_scope = ('generator' if 'generator/embeddings/word_embeddings' in shapes else 'electra')
  m = _model_config_from_tf1(shapes, gen_scope, num_heads, path)
  m.embedding_sharing = 'separate' if gen_emb_scope == 'generator' else 'shared'
  m.untied_generator = gen_scope == 'generator'
  if gen_emb_scope == 'generator':  # the generator's own tables: as wide as it (the original)?
    width = _tf1_shape(shapes, 'generator/embeddings/word_embeddings', path)[1]
    if width != model_lib.generator_size(m).hidden_size:
      m.generator_embedding_size = width
  expected = expected_shapes(m, gen_emb_scope == 'generator')
  scopes = {'discriminator': ('electra', 'electra'), 'generator': (gen_scope, gen_emb_scope)}
  source = {n: (lambda n=n: reader.get_tensor(n)) for n in shapes}
  trees, used = {}, set()
  for kind in KINDS:
    if has[kind]:
      body, emb = scopes[kind]
      trees[kind], names = _import_tree(
          expected[kind], source, lambda p, b=body, e=emb: _tf1_aliases(tf1_name(p, b, e)),
          lambda p: False, path)
      used |= names
  _check_unexpected(shapes, used, lambda n: shapes[n], path)
  directory = path if paths.isdir(path) else paths.dirname(paths.abspath(path))
  info = (tokenization.vocab_info(vocab, do_lower_case) if vocab
          else _found_vocab(directory, do_lower_case))
  return Weights(m, trees.get('discriminator'), trees.get('generator'), info)


# ---------------------------------------------------------------------------------------------
# electra_jax `pretrained/` dirs (checkpoint.py's format).


def _pretrained_dir(path: str) -> str:
  inner = paths.join(path, 'pretrained')
  if paths.isdir(inner):
    return inner
  if paths.isdir(paths.join(path, 'checkpoints')):
    raise UserError(f'the workdir {path} has no pretrained/ weights yet: a run writes them when it '
                    'finishes (num_train_steps)')
  return path


def read_electra_jax(path: str) -> Weights:
  """An electra_jax `pretrained/` dir, or a workdir holding one."""
  directory = _pretrained_dir(path)
  m, weights, vocab = checkpoint.load_pretrained(directory)
  if not weights:
    raise UserError(f'{directory} holds no discriminator.msgpack or generator.msgpack')
  return Weights(m, weights.get('discriminator'), weights.get('generator'), vocab)


def write_electra_jax(w: Weights, directory: str) -> list[str]:
  """The `pretrained/` format (checkpoint.write_pretrained) for whichever models `w` has, with the
  vocabulary file copied beside the weights."""
  paths.makedirs(directory)
  vocab = dict(w.vocab)
  source = vocab.get('vocab_path')
  if source and paths.isfile(source):  # keep the vocabulary with the weights
    target = paths.join(directory, paths.basename(source))
    if paths.abspath(source) != paths.abspath(target):
      paths.copy(source, target)
    vocab['vocab_path'] = paths.abspath(target)
  return checkpoint.write_pretrained(directory, w.model.to_dict(),
                                     {kind: getattr(w, kind) for kind in KINDS}, vocab)


# ---------------------------------------------------------------------------------------------
# Any format.

FORMATS = ('hf', 'tf1', 'electra_jax')


def detect_format(path: str) -> str:
  """'electra_jax', 'hf' or 'tf1' from what `path` holds."""
  if paths.isdir(path):
    if (any(paths.isdir(paths.join(path, d)) for d in ('pretrained', 'checkpoints'))
        or any(paths.isfile(paths.join(path, f'{k}.msgpack')) for k in KINDS)):
      return 'electra_jax'
    if paths.isfile(paths.join(path, 'config.json')) or any(
        paths.isfile(paths.join(path, k, 'config.json')) for k in KINDS):
      return 'hf'
    if paths.isfile(paths.join(path, 'checkpoint')):
      return 'tf1'
  elif paths.isfile(path + '.index'):
    return 'tf1'
  elif ',' in path:
    return 'hf'
  raise UserError(f'{path} is neither an electra_jax pretrained/ dir or workdir, a HF model dir, '
                  'nor a TF1 checkpoint')


def read(path: str, fmt: str = '', num_heads: int = 0, vocab: str = '',
         do_lower_case: bool = True) -> Weights:
  """Reads `path` in format `fmt` ('' = detect). `vocab` replaces the vocabulary found there."""
  if not path:
    raise UserError('no checkpoint given (--input)')
  if not paths.exists(path) and not paths.exists(path + '.index') and ',' not in path:
    raise UserError(f'{path} does not exist')
  fmt = fmt or detect_format(path)
  if fmt == 'tf1':
    return read_tf1(path, num_heads, vocab, do_lower_case)
  if fmt == 'hf':
    w = read_hf(path)
  elif fmt == 'electra_jax':
    w = read_electra_jax(path)
  else:
    raise UserError(f'unknown checkpoint format {fmt!r}; use one of {", ".join(FORMATS)}')
  if vocab:
    w.vocab = tokenization.vocab_info(vocab, do_lower_case)
  return w


def write(w: Weights, fmt: str, output: str) -> list[str]:
  if fmt == 'hf':
    return write_hf(w, output)
  if fmt == 'electra_jax':
    return write_electra_jax(w, output)
  raise UserError(f"cannot write format {fmt!r}; use 'hf' or 'electra_jax'")


# ---------------------------------------------------------------------------------------------
# Initial params of a training run (config.init_checkpoint).


def _checked(source: dict, target: dict, what: str, where: str) -> dict:
  """`source` as float32 numpy if its tree and shapes equal `target`'s, else a UserError."""
  src, dst = traverse_util.flatten_dict(source), traverse_util.flatten_dict(target)
  for path in dst:
    if path not in src:
      raise UserError(f'init_checkpoint {where} lacks {what}/{_leaf_path(path)} '
                      f'(shape {_shape_text(dst[path].shape)} in this config)')
    if tuple(src[path].shape) != tuple(dst[path].shape):
      raise UserError(f'init_checkpoint {where}: {what}/{_leaf_path(path)} has shape '
                      f'{_shape_text(src[path].shape)} there but {_shape_text(dst[path].shape)} in '
                      'this config')
  for path in src:
    if path not in dst:
      raise UserError(f'init_checkpoint {where} has {what}/{_leaf_path(path)}, which this config '
                      'does not (another embedding size?)')
  return traverse_util.unflatten_dict({p: np.asarray(v, np.float32) for p, v in src.items()})


def _check_heads(w: Weights, model_config, where: str):
  pairs = []
  if w.discriminator is not None:
    pairs.append(('discriminator', model_lib.discriminator_size(w.model),
                  model_lib.discriminator_size(model_config)))
  if w.generator is not None:
    pairs.append(('generator', model_lib.generator_size(w.model),
                  model_lib.generator_size(model_config)))
  for kind, got, wanted in pairs:
    if got.num_heads != wanted.num_heads:
      raise UserError(f'init_checkpoint {where}: the {kind} has {got.num_heads} attention heads '
                      f'but {wanted.num_heads} in this config (model.num_heads)')
  if w.model.layer_norm_eps != model_config.layer_norm_eps:
    logging.warning('init_checkpoint %s was trained with layer_norm_eps %g, this config has %g.',
                    where, w.model.layer_norm_eps, model_config.layer_norm_eps)


def _read_vocab_file(path: str):
  with paths.open(path, 'rb') as f:
    data = f.read()
  return data.splitlines() if path.endswith('.txt') else data


def _check_vocab(w: Weights, data_config, data_vocab_path: str, where: str):
  if w.vocab.get('do_lower_case', data_config.do_lower_case) != data_config.do_lower_case:
    logging.warning('init_checkpoint %s was trained with do_lower_case=%s, the data has %s.', where,
                    w.vocab['do_lower_case'], data_config.do_lower_case)
  theirs = w.vocab.get('vocab_path')
  if not data_vocab_path or not theirs or not paths.isfile(theirs):
    logging.info('init_checkpoint %s: no vocabulary recorded with it to compare with the data\'s.',
                 where)
    return
  if _read_vocab_file(theirs) != _read_vocab_file(data_vocab_path):
    raise UserError(f'init_checkpoint {where} was trained with the vocabulary {theirs}, but the '
                    f'data uses {data_vocab_path}: set --config.data.vocab={theirs} (and a new '
                    '--config.data.data_dir)')


def _merged_generator(w: Weights, params: dict, model_config, where: str, new: dict):
  """Puts the imported generator into `new` (a copy of the randomly initialized `params`)."""
  gen = w.generator
  if model_config.untied_generator:
    new['generator'] = _checked(gen['generator'], params['generator'], 'generator', where)
  elif w.discriminator is None:
    new['discriminator'] = _checked(gen['generator'], params['discriminator'], 'discriminator',
                                    where)
  elif not trees_equal(gen['generator'], w.discriminator['discriminator']):
    raise UserError(f'init_checkpoint {where} has a generator of its own, but this config ties it '
                    'to the discriminator (model.untied_generator=False)')
  new['generator_predictions'] = _checked(gen['generator_predictions'],
                                          params['generator_predictions'],
                                          'generator_predictions', where)
  if model_lib.embedding_sharing(model_config) != 'shared':
    new['generator_embeddings'] = _checked(gen['embeddings'], params['generator_embeddings'],
                                           'generator_embeddings', where)
  elif w.discriminator is None:
    new['embeddings'] = _checked(gen['embeddings'], params['embeddings'], 'embeddings', where)
  elif not trees_equal(gen['embeddings'], w.discriminator['embeddings']):
    raise UserError(f'init_checkpoint {where}: the generator\'s embeddings differ from the '
                    'discriminator\'s, but this config shares one table; set '
                    "--config.model.embedding_sharing='separate' (or 'gdes')")


def initial_params(config, params, data_vocab_path: str = '') -> dict:
  """The pre-training params to start from: `params` (random init) with `config.init_checkpoint`'s
  generator and discriminator put in.

  One shared embedding table stays one table (unless model.embedding_sharing says not). A
  checkpoint with only a discriminator (e.g. a fine-tuning HF model) leaves the generator at its
  random init, and says so. Any shape that differs from the config's is a UserError naming the
  parameter; so is a vocabulary that differs from the data's (`data_vocab_path`).
  """
  where = config.init_checkpoint
  w = read(where, num_heads=config.model.num_heads)
  _check_heads(w, config.model, where)
  _check_vocab(w, config.data, data_vocab_path, where)
  params = jax.device_get(params)
  new = dict(params)
  if w.discriminator is not None:
    for key in checkpoint.DISCRIMINATOR_KEYS:
      new[key] = _checked(w.discriminator[key], params[key], key, where)
  else:
    logging.warning('init_checkpoint %s has no discriminator: it keeps its random initialization.',
                    where)
  if w.generator is not None:
    _merged_generator(w, params, config.model, where, new)
  else:
    logging.warning('init_checkpoint %s has no generator: the generator keeps its random '
                    'initialization.', where)
  if model_lib.embedding_sharing(config.model) == 'gdes':
    # The discriminator's word/position tables are the generator's plus E_delta: E_delta is what
    # makes the imported discriminator table exact.
    emb = dict(new['embeddings'])
    for table in ('word_embeddings', 'position_embeddings'):
      emb[table] = {'embedding': np.asarray(emb[table]['embedding'], np.float32) - np.asarray(
          new['generator_embeddings'][table]['embedding'], np.float32)}
    new['embeddings'] = emb
  logging.info('Initialized the %s from init_checkpoint %s.', ' and '.join(w.kinds()), where)
  return new


# ---------------------------------------------------------------------------------------------
# Command line.


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum('from', None, list(FORMATS), 'Format of --input.')
  flags.DEFINE_enum('to', None, ['electra_jax', 'hf'], 'Format to write to --output.')
  flags.DEFINE_string('input', None, 'Checkpoint to read (dir, or TF1 checkpoint prefix).')
  flags.DEFINE_string('output', None, 'Directory to write.')
  flags.DEFINE_integer('num_heads', 0, 'TF1 only: attention heads (default hidden_size // 64).')
  flags.DEFINE_string('vocab', '', 'A vocab.txt (or .model) to use instead of the one found with '
                      'the input.')
  flags.DEFINE_bool('do_lower_case', True, 'For a vocab.txt without tokenizer_config.json (TF1, '
                    '--vocab): whether it is uncased.')


def convert(source_format: str, target_format: str, input_path: str, output: str,
            num_heads: int = 0, vocab: str = '', do_lower_case: bool = True) -> list[str]:
  """Reads `input_path` and writes it to `output`; returns the paths written."""
  if not output:
    raise UserError('--output is required')
  w = read(input_path, source_format, num_heads, vocab, do_lower_case)
  return write(w, target_format, output)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags_ = flags.FLAGS
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments: {" ".join(argv[1:])}')
  missing = [f'--{n}' for n in ('from', 'to', 'input', 'output') if not flags_[n].value]
  if missing:
    sys.exit(f'error: {", ".join(missing)} required')
  try:
    written = convert(flags_['from'].value, flags_['to'].value, flags_['input'].value,
                      flags_['output'].value, flags_['num_heads'].value, flags_['vocab'].value,
                      flags_['do_lower_case'].value)
  except UserError as e:
    sys.exit(f'error: {e}')
  print(f"wrote {', '.join(written)}")


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()  # only here: train.py imports this module next to main.py's flags
  app.run(main)
