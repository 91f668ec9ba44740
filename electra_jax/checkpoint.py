"""Checkpoints: orbax CheckpointManager for training state, and the exported pre-trained weights.

- `WORKDIR/checkpoints/<step>/`: the whole train state (step, params, optimizer state), written
  asynchronously, last `keep_checkpoints` kept. A run finds the latest one and resumes from it.
  Orbax writes into a temporary folder and renames it when complete, so a run killed mid-save
  leaves no checkpoint that looks complete.
- `WORKDIR/pretrained/`: the final weights in a form to load elsewhere (fine-tuning, conversion):
    config.json                     model config, tying switches and vocabulary info
    discriminator.msgpack           {embeddings, discriminator, discriminator_predictions}
    generator.msgpack               {embeddings | generator_embeddings, generator,
                                     generator_predictions}
  (flax.serialization msgpack of float32 numpy arrays; `load_pretrained` reads them back.)
"""
import json
import os

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from electra_jax import model as model_lib
from electra_jax.errors import UserError


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints,
      enable_async_checkpointing=config.async_checkpoints,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options, item_handlers=ocp.StandardCheckpointHandler())


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """Returns the latest checkpointed state (placed like `abstract_state`), or None if there is none.

  A checkpoint of another model (other sizes, other tying) is a UserError naming the difference.
  """
  step = manager.latest_step()
  if step is None:
    return None
  saved_tree = manager.item_metadata(step)
  saved_tree = getattr(saved_tree, 'tree', saved_tree)  # orbax wraps the tree of metadata
  saved = _shapes(saved_tree['params'])
  wanted = _shapes(abstract_state.params)
  if saved != wanted:
    missing = sorted(set(wanted) - set(saved))
    unexpected = sorted(set(saved) - set(wanted))
    differ = [k for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    what = (f'{differ[0]} is {saved[differ[0]]} there but {wanted[differ[0]]} in this config'
            if differ else f'missing {missing[:2]}, unexpected {unexpected[:2]}')
    raise UserError(f'the checkpoint in {manager.directory} (step {step}) is of another model: '
                    f'{what}; use another --workdir or the matching config')
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError, TypeError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'the checkpoint in {manager.directory} (step {step}) does not fit this '
                    f'config (other optimizer settings?): {first_line}') from None


def save(manager: ocp.CheckpointManager, step: int, state, force: bool = False):
  manager.save(step, args=ocp.args.StandardSave(state), force=force)


# ---- Exported pre-trained weights.

DISCRIMINATOR_KEYS = ('embeddings', 'discriminator', 'discriminator_predictions')


def split_pretrained(params, objective_config):
  """Full pre-training params -> (discriminator params, generator params), each standalone.

  With embedding_sharing='gdes' the discriminator's word and position tables are written as used:
  the generator's plus E_delta, so the export is a plain ELECTRA discriminator.
  """
  sharing = model_lib.embedding_sharing(objective_config)
  disc = {k: params[k] for k in DISCRIMINATOR_KEYS}
  if sharing == 'gdes':
    emb = dict(disc['embeddings'])
    for table in ('word_embeddings', 'position_embeddings'):
      emb[table] = {'embedding': emb[table]['embedding']
                                 + params['generator_embeddings'][table]['embedding']}
    disc['embeddings'] = emb
  gen_emb = 'embeddings' if sharing == 'shared' else 'generator_embeddings'
  gen_body = 'generator' if objective_config.untied_generator else 'discriminator'
  gen = {'embeddings': params[gen_emb], 'generator': params[gen_body],
         'generator_predictions': params['generator_predictions']}
  return disc, gen


def export_pretrained(directory: str, params, config, vocab_info: dict):
  """Writes the final generator and discriminator weights (see module docstring)."""
  os.makedirs(directory, exist_ok=True)
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
  disc, gen = split_pretrained(params, config.objective)
  for name, tree in (('discriminator', disc), ('generator', gen)):
    tmp = os.path.join(directory, f'{name}.msgpack.tmp')
    with open(tmp, 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(tree))
    os.replace(tmp, os.path.join(directory, f'{name}.msgpack'))
  sharing = model_lib.embedding_sharing(config.objective)
  model_config = config.model.to_dict()
  if sharing == 'gdes':  # the generator's own tables are embedding_size wide: say so
    width = config.model.embedding_size
    model_config['generator_embedding_size'] = (
        0 if width == model_lib.generator_size(config.model).hidden_size else width)
  info = {'model': model_config, 'vocab': vocab_info,
          'objective': {'untied_generator_embeddings': sharing != 'shared',
                        'untied_generator': config.objective.untied_generator}}
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(info, f, indent=2)


def load_pretrained(directory: str):
  """-> (model ConfigDict, {'discriminator': params, 'generator': params}, vocab info dict).

  Generator params use the keys `embeddings`, `generator`, `generator_predictions`.
  """
  path = os.path.join(directory, 'config.json')
  if not os.path.exists(path):
    raise UserError(f'{directory} holds no exported electra_jax weights (no config.json)')
  with open(path) as f:
    info = json.load(f)
  weights = {}
  for name in ('discriminator', 'generator'):
    file = os.path.join(directory, f'{name}.msgpack')
    if os.path.exists(file):
      with open(file, 'rb') as f:
        weights[name] = flax.serialization.msgpack_restore(f.read())
  return ml_collections.ConfigDict(info['model']), weights, info.get('vocab', {})
