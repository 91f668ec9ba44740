"""Checkpoints: orbax CheckpointManager for training state, and the exported pre-trained weights.

- `WORKDIR/checkpoints/<step>/`: the whole train state (step, params, optimizer state, the
  non-finite step record), written asynchronously, last `keep_checkpoints` kept (fine-tuning: and
  the best dev one, ranked by the metrics saved with each), each with the run's `run_info`
  (vocabulary hash, data settings) in its metadata. A run resumes from the newest one it can read
  (`restore_latest`: unreadable ones are skipped and moved aside) and refuses one of other data.
  Orbax writes into a temporary folder and renames it when complete, so a run killed or out of
  disk space mid-save leaves no checkpoint that looks complete. A state holding a NaN or infinity
  is never saved or exported.
- `WORKDIR/pretrained/`: the final weights in a form to load elsewhere (fine-tuning, conversion):
    config.json                     model config (with how the generator is tied) and vocabulary
                                    info; files of before the tying switches moved to `model`
                                    are read in today's layout (defaults.upgrade)
    discriminator.msgpack           {embeddings, discriminator, discriminator_predictions}
    generator.msgpack               {embeddings | generator_embeddings, generator,
                                     generator_predictions}
  (flax.serialization msgpack of float32 numpy arrays; `load_pretrained` reads them back.)
"""
import json

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from electra_jax import defaults
from electra_jax import model as model_lib
from electra_jax import paths
from electra_jax.errors import UserError


def checkpoint_manager(workdir: str, config, best_fn=None) -> ocp.CheckpointManager:
  """The manager of WORKDIR/checkpoints: the latest `config.keep_checkpoints` are kept.

  With `best_fn` (a save's metrics -> what ranks it, the highest best), a save may carry metrics
  (`save(..., metrics=...)`, written into the step's folder) and the best checkpoint by them is
  kept too, however old: `manager.best_step()` names it and `manager.metrics(step)` reads its
  metrics back. A save without metrics is never the best.
  """
  if best_fn is None:
    keep = dict(max_to_keep=config.keep_checkpoints)
  else:  # orbax takes either max_to_keep or a preservation policy
    policies = ocp.checkpoint_managers
    keep = dict(best_fn=best_fn, best_mode='max',
                preservation_policy=policies.AnyPreservationPolicy([
                    policies.LatestN(n=config.keep_checkpoints),
                    policies.BestN(get_metric_fn=best_fn, n=1,
                                   keep_checkpoints_without_metrics=False)]))
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=config.async_checkpoints, cleanup_tmp_directories=True, **keep)
  return ocp.CheckpointManager(paths.join(paths.abspath(workdir), 'checkpoints'),
                               options=options, item_handlers=ocp.StandardCheckpointHandler())


def _shapes(tree):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def _first_line(error: Exception) -> str:
  """An orbax / TensorStore error in a line: its first, without the spec dump that follows."""
  text = str(error).strip() or type(error).__name__
  if 'No space left on device' in text or "os_error_code='28'" in text:
    return 'no space left on device'
  line = text.splitlines()[0].split(' See full TensorStore details')[0]
  return line if len(line) <= 200 else line[:200] + '...'


class _Unreadable(Exception):
  """One checkpoint step that cannot be restored into this run's state."""


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract_state):
  try:
    saved_tree = manager.item_metadata(step)
    saved_tree = getattr(saved_tree, 'tree', saved_tree)  # orbax wraps the tree of metadata
    saved = _shapes(saved_tree['params'])
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise _Unreadable(f'no readable metadata ({_first_line(e)})') from None
  wanted = _shapes(abstract_state.params)
  if saved != wanted:
    missing = sorted(set(wanted) - set(saved))
    unexpected = sorted(set(saved) - set(wanted))
    differ = [k for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
    what = (f'{differ[0]} is {saved[differ[0]]} there but {wanted[differ[0]]} in this config'
            if differ else f'missing {missing[:2]}, unexpected {unexpected[:2]}')
    raise _Unreadable(f'it is of another model: {what}')
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except Exception as e:  # pylint: disable=broad-except  (TensorStore raises plain Exception)
    raise _Unreadable(_first_line(e)) from None
  if int(state.step) != step:
    raise _Unreadable(f'it holds step {int(state.step)}')
  return state


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """Checkpoint `step`, placed like `abstract_state`; a UserError if it cannot be read."""
  try:
    return _restore_step(manager, step, abstract_state)
  except _Unreadable as e:
    raise UserError(f'checkpoint {step} in {manager.directory} cannot be read ({e})') from None


def recorded_run_info(manager: ocp.CheckpointManager, step=None) -> dict:
  """The `run_info` saved with checkpoint `step` (default: the newest that has one), or {}."""
  for s in [step] if step is not None else sorted(manager.all_steps(), reverse=True):
    try:
      info = manager.metadata(s).custom_metadata
    except Exception:  # pylint: disable=broad-except  (a damaged step: its data decides later)
      continue
    if info:
      return dict(info)
  return {}


def check_run_info(manager: ocp.CheckpointManager, run_info: dict, step=None):
  """Refuses (UserError) a resume whose `run_info` differs from the one the checkpoint recorded.

  `run_info` holds what the weights are tied to (vocabulary hash, data settings; see train.py and
  finetune/loop.py); keys that only one side has are not compared.
  """
  recorded = recorded_run_info(manager, step)
  for key, value in run_info.items():
    if key in recorded and recorded[key] != value:
      what = (f'another vocabulary (SHA-256 {recorded[key][:12]}.., this run has {value[:12]}..)'
              if key == 'vocab_sha256' else f'{key} = {recorded[key]!r}, this run has {value!r}')
      raise UserError(
          f'the checkpoints in {manager.directory} were trained with {what}; resuming would '
          'silently change what the weights mean. Use another --workdir '
          '(--config.init_checkpoint can start it from these weights), or the settings they were '
          'trained with')


def restore_latest(manager: ocp.CheckpointManager, abstract_state, run_info: dict | None = None):
  """Returns the newest checkpointed state that can be read (placed like `abstract_state`), or None
  if there is no checkpoint.

  A checkpoint that cannot be read (a missing or truncated file, an empty folder, arrays of another
  model) is reported in one line and the one before it is tried; the unreadable newer ones are then
  moved aside to `<step>.unreadable` (orbax ignores such names, and the run will write those steps
  again). If none can be read: a UserError naming the folder and each one's reason. A checkpoint
  whose recorded `run_info` differs is refused (`check_run_info`), not skipped.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  failed = {}
  for step in steps:
    try:
      state = _restore_step(manager, step, abstract_state)
    except _Unreadable as e:
      failed[step] = str(e)
      continue
    check_run_info(manager, run_info or {}, step)
    for bad, reason in failed.items():
      print(f'checkpoint {bad} in {manager.directory} cannot be read ({reason}); using {step}',
            flush=True)
    if failed:
      _move_aside(manager, failed)
    return state
  if steps:
    reasons = '; '.join(f'step {s}: {r}' for s, r in failed.items())
    raise UserError(f'no checkpoint in {manager.directory} can be restored ({reasons}); move them '
                    'away to start afresh, or use another --workdir or the config they were '
                    'written with')
  return None


def _move_aside(manager: ocp.CheckpointManager, steps):
  """Renames unreadable step folders to `<step>.unreadable[.N]` (process 0), then all reload."""
  if jax.process_index() == 0:
    for step in steps:
      path = paths.join(manager.directory, str(step))
      target, n = f'{path}.unreadable', 1
      while paths.exists(target):
        target, n = f'{path}.unreadable.{n}', n + 1
      paths.rename(path, target)
      print(f'moved the unreadable checkpoint {step} to {target}', flush=True)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('electra_jax: unreadable checkpoints moved')
  manager.reload()


@jax.jit
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def save(manager: ocp.CheckpointManager, step: int, state, run_info: dict | None = None,
         metrics: dict | None = None):
  """Saves `state` as checkpoint `step` (asynchronously if the manager is), with `run_info` in its
  metadata and `metrics` (JSON, for a manager made with a `best_fn`) beside it.

  A state holding a non-finite value is never saved (UserError; one reduction over the state, at
  checkpoint steps only). A failed write (disk full, ...) is a UserError naming the folder: orbax
  writes into a temporary folder and renames it when complete, so the checkpoints before it stay
  intact and the next run removes the partial one.
  """
  if not bool(_all_finite(state)):
    raise UserError(f'the train state at step {step} holds non-finite values (an overflow?); it was '
                    f'not saved. The latest checkpoint in {manager.directory} is '
                    f'{manager.latest_step()}')
  try:
    manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=run_info or {},
                 metrics=metrics)
  except Exception as e:  # pylint: disable=broad-except  (TensorStore raises ValueError & co)
    raise _write_error(manager, e) from None


def _write_error(manager, error) -> UserError:
  return UserError(f'could not write a checkpoint to {manager.directory}: {_first_line(error)}; '
                   'the checkpoints before it are intact (free some space, then rerun)')


def wait(manager: ocp.CheckpointManager):
  """Waits for the last asynchronous save (then it can be read); a failed write is a UserError."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(manager, e) from None


def finish(manager: ocp.CheckpointManager):
  """Waits for the last asynchronous save and closes `manager`; a failed write is a UserError."""
  try:
    wait(manager)
  finally:
    manager.close()


# ---- Exported pre-trained weights.

DISCRIMINATOR_KEYS = ('embeddings', 'discriminator', 'discriminator_predictions')


def split_pretrained(params, model_config):
  """Full pre-training params -> (discriminator params, generator params), each standalone.

  With embedding_sharing='gdes' the discriminator's word and position tables are written as used:
  the generator's plus E_delta, so the export is a plain ELECTRA discriminator.
  """
  sharing = model_lib.embedding_sharing(model_config)
  disc = {k: params[k] for k in DISCRIMINATOR_KEYS}
  if sharing == 'gdes':
    emb = dict(disc['embeddings'])
    for table in ('word_embeddings', 'position_embeddings'):
      emb[table] = {'embedding': emb[table]['embedding']
                                 + params['generator_embeddings'][table]['embedding']}
    disc['embeddings'] = emb
  gen_emb = 'embeddings' if sharing == 'shared' else 'generator_embeddings'
  gen_body = 'generator' if model_config.untied_generator else 'discriminator'
  gen = {'embeddings': params[gen_emb], 'generator': params[gen_body],
         'generator_predictions': params['generator_predictions']}
  return disc, gen


def export_pretrained(directory: str, params, config, vocab_info: dict):
  """Writes the final generator and discriminator weights (see module docstring)."""
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [jax.tree_util.keystr(path) for path, x in flat if not np.all(np.isfinite(x))]
  if bad:
    raise UserError(f'the weights hold non-finite values ({bad[0]}); nothing was exported to '
                    f'{directory}')
  disc, gen = split_pretrained(params, config.model)
  # The model of the files: with gdes the generator's own tables (embedding_size wide: say so)
  # beside the discriminator's summed ones, i.e. 'separate'.
  sharing = model_lib.embedding_sharing(config.model)
  model_config = dict(config.model.to_dict(), untied_generator_embeddings=False,
                      embedding_sharing='shared' if sharing == 'shared' else 'separate')
  if sharing == 'gdes':
    width = config.model.embedding_size
    model_config['generator_embedding_size'] = (
        0 if width == model_lib.generator_size(config.model).hidden_size else width)
  write_pretrained(directory, model_config, {'discriminator': disc, 'generator': gen}, vocab_info)


def write_pretrained(directory: str, model_config: dict, weights: dict, vocab_info: dict):
  """The one writer of the pretrained/ format: `weights` {'discriminator' | 'generator': standalone
  params or None}; a model given as None has its file of an earlier write removed. Each file is
  replaced whole (written aside, then renamed). Returns the weight files written."""
  paths.makedirs(directory)
  written = []
  for name, tree in weights.items():
    file = paths.join(directory, f'{name}.msgpack')
    if tree is None:
      if paths.exists(file):
        paths.remove(file)
      continue
    with paths.open(file + '.tmp', 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(tree))
    paths.replace(file + '.tmp', file)
    written.append(file)
  with paths.open(paths.join(directory, 'config.json'), 'w') as f:
    json.dump({'model': model_config, 'vocab': vocab_info}, f, indent=2)
  return written


def load_pretrained(directory: str):
  """-> (model ConfigDict, {'discriminator': params, 'generator': params}, vocab info dict).

  Generator params use the keys `embeddings`, `generator`, `generator_predictions`. The model
  config says how the generator is tied (model.embedding_sharing, model.untied_generator), also
  for an export of before those moved there from 'objective' (defaults.upgrade).
  """
  path = paths.join(directory, 'config.json')
  if not paths.exists(path):
    raise UserError(f'{directory} holds no exported electra_jax weights (no config.json)')
  with paths.open(path) as f:
    info = json.load(f)
  weights = {}
  for name in ('discriminator', 'generator'):
    file = paths.join(directory, f'{name}.msgpack')
    if paths.exists(file):
      with paths.open(file, 'rb') as f:
        weights[name] = flax.serialization.msgpack_restore(f.read())
  info = defaults.upgrade(info)
  return ml_collections.ConfigDict(info['model']), weights, info.get('vocab', {})
