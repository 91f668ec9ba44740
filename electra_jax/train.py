"""The pre-training loop: `train_and_evaluate(config, workdir)`, readable top to bottom.

The jitted step is a pure function (state, batch, rng) -> (state, metrics); the step's randomness is
jax.random.fold_in(rng, step) and the batch at step N depends only on (seed, N, data), so a resumed
run repeats the uninterrupted run bit for bit (on CPU).

What can go wrong is handled where it happens: a step with a non-finite loss or gradient is not
applied and the host stops the run at its next sync (train_state.py); SIGTERM / SIGINT end the run
at a step boundary with a checkpoint (preemption.py); one run per workdir (workdir_lock.py);
unreadable checkpoints are skipped (checkpoint.restore_latest).
"""
import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax import build_data
from electra_jax import checkpoint
from electra_jax import errors
from electra_jax import input_pipeline
from electra_jax import metrics_log
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax import optim
from electra_jax import paths
from electra_jax import preemption
from electra_jax import sharding
from electra_jax import train_state
from electra_jax import workdir_lock
from electra_jax.errors import UserError


def create_train_state(model, tx, rng) -> train_state.TrainState:
  params = model_lib.init_params(model, rng)
  return train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=tx.init(params),
                                nonfinite=train_state.new_nonfinite_record())


def train_step(state: train_state.TrainState, batch, rng, *, model, tx, learning_rate_fn,
               objective_config, special, max_predictions, grad_accum_steps: int = 1,
               max_nonfinite_in_a_row: int = 1):
  """One optimizer step on one global batch (in `grad_accum_steps` microbatches)."""
  step_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params, rows, key, counts=None):  # the whole batch or a microbatch
    return objective.electra_loss(model_lib.networks(model), model_lib.apply_params(model, params),
                                  rows, key, objective_config, special, max_predictions,
                                  deterministic=False, counts=counts)

  if grad_accum_steps == 1:
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_rng)
    sums = objective.pretraining_metrics(aux)
    auc_inputs = objective.auc_inputs(aux)
  else:
    counts = objective.loss_counts(batch, special, objective_config.mask_prob, max_predictions)
    loss, grads, sums, auc_inputs = _accumulated_gradients(loss_fn, state.params, batch, step_rng,
                                                           grad_accum_steps, counts)
  metrics = objective.summarize_metrics(sums)
  metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                 learning_rate=learning_rate_fn(state.step))
  if auc_inputs:
    metrics['disc_auc'] = objective.binary_auc(auc_inputs['disc_labels'], auc_inputs['disc_probs'],
                                               auc_inputs['disc_weights'])
  checked = {k: metrics[k] for k in train_state.NONFINITE_KEYS if k in metrics}
  new_state = train_state.apply_if_finite(state, grads, checked, tx, max_nonfinite_in_a_row)
  # Accuracies and the AUC of NaN outputs would still look like numbers: a step that is not
  # applied reports NaN for all of them.
  finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in checked.values()]))
  metrics = {k: v if k in train_state.NONFINITE_KEYS + ('learning_rate',)
             else jnp.where(finite, v, jnp.nan) for k, v in metrics.items()}
  return new_state, metrics


def _accumulated_gradients(loss_fn, params, batch, step_rng, num_micro, counts):
  """Loss and gradient of the whole batch, summed over `num_micro` microbatches in a lax.scan.

  The reference averages the MLM loss over the batch's used masked slots and the discriminator
  loss over its real tokens: each microbatch's `loss_fn` divides by the whole batch's `counts`
  (objective.loss_counts), so the summed loss and gradient are the big batch's.
  Microbatch i draws its randomness from fold_in(step_rng, i) and holds rows i, i + n, i + 2n ..
  (n = num_micro), so every device keeps its share of each microbatch.
  """
  micro_batches = jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]), 0, 1),
      batch)

  def body(grad_sum, xs):
    micro, index = xs
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, micro, jax.random.fold_in(step_rng, index), counts)
    return (jax.tree.map(jnp.add, grad_sum, grads),
            (loss, objective.pretraining_metrics(aux), objective.auc_inputs(aux)))

  zeros = jax.tree.map(jnp.zeros_like, params)
  grads, (losses, sums, auc_inputs) = jax.lax.scan(body, zeros,
                                                   (micro_batches, jnp.arange(num_micro)))
  sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)
  return jnp.sum(losses), grads, sums, auc_inputs


def eval_step(params, batch, rng, *, model, objective_config, special, max_predictions):
  """Metric sums of one held-out batch (no dropout; fixed masking/sampling rng per batch)."""
  _, aux = objective.electra_loss(model_lib.networks(model), model_lib.apply_params(model, params),
                                  batch, rng, objective_config, special, max_predictions,
                                  deterministic=True)
  return objective.pretraining_metrics(aux), objective.auc_inputs(aux)


@dataclasses.dataclass(frozen=True)
class Steps:
  """The jitted functions of a run on one mesh, and the shardings they take and give."""
  init: Callable  # rng -> TrainState, created already sharded
  train: Callable  # (state, batch, rng) -> (state, metrics); the input state is donated
  eval: Callable  # (params, batch, rng) -> (metric sums, AUC inputs)
  tx: optax.GradientTransformation
  state_sharding: Any  # TrainState of NamedShardings
  abstract_state: Any  # TrainState of ShapeDtypeStructs carrying those shardings
  batch_sharding: jax.sharding.NamedSharding
  replicated: jax.sharding.NamedSharding


def make_steps(config, mesh, special, max_predictions) -> Steps:
  """Builds the model, optimizer and jitted steps for `mesh`.

  Training and ahead-of-time compilation (compile_tpu.py) both call this, so what is compiled for
  a TPU slice is exactly what a run on it executes. Nothing here touches a device: `mesh` may be
  made of compile-only TPU devices.
  """
  # model.kernels 'auto' follows the mesh's devices: a CPU host compiling for a TPU slice builds
  # the TPU's step.
  model = model_lib.make_pretrainer(config, platform=mesh.devices.flat[0].platform)
  learning_rate_fn = optim.learning_rate_schedule(config.optim, config.num_train_steps)
  tx = optim.make_optimizer(config.optim, config.num_train_steps, learning_rate_fn)
  repl = sharding.replicated(mesh)
  create = functools.partial(create_train_state, model, tx)
  abstract = jax.eval_shape(create, jax.eval_shape(jax.random.key, 0))
  state_sharding = sharding.state_shardings(mesh, abstract, config.fsdp_min_size)
  abstract_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract, state_sharding)
  step_kwargs = dict(model=model, objective_config=config.objective, special=special,
                     max_predictions=max_predictions)
  # The splash-attention kernel runs per shard over the mesh it is traced in.
  in_mesh = (functools.partial(sharding.traced_in_mesh, mesh)
             if model.model_config.attention.startswith('splash') else lambda fn: fn)
  batch_shard = sharding.batch_sharding(mesh)
  train_step_fn = jax.jit(
      in_mesh(functools.partial(train_step, tx=tx, learning_rate_fn=learning_rate_fn,
                                grad_accum_steps=config.grad_accum_steps,
                                max_nonfinite_in_a_row=train_state.nonfinite_limit(config),
                                **step_kwargs)),
      in_shardings=(state_sharding, batch_shard, repl), out_shardings=(state_sharding, repl),
      donate_argnums=(0,))
  eval_step_fn = jax.jit(in_mesh(functools.partial(eval_step, **step_kwargs)),
                         in_shardings=(state_sharding.params, batch_shard, repl),
                         out_shardings=repl)
  return Steps(init=jax.jit(create, out_shardings=state_sharding), train=train_step_fn,
               eval=eval_step_fn, tx=tx, state_sharding=state_sharding,
               abstract_state=abstract_state, batch_sharding=batch_shard, replicated=repl)


def evaluate(eval_fn, params, mesh, batches, rng) -> dict:
  totals, auc_parts = {}, []
  for i, batch in enumerate(batches):
    sums, auc_inputs = jax.device_get(eval_fn(params, sharding.global_batch(mesh, batch),
                                              jax.random.fold_in(rng, i)))
    for k, v in sums.items():
      totals[k] = totals.get(k, 0.0) + np.float64(v)
    auc_parts.append(auc_inputs)
  if not totals:
    raise UserError('the held-out data gave no eval batch; raise data.eval_fraction or lower '
                    'batch_size')
  result = {k: float(v) for k, v in objective.summarize_metrics(totals).items()}
  if auc_parts and auc_parts[0]:
    cat = {k: np.concatenate([p[k].ravel() for p in auc_parts]) for k in auc_parts[0]}
    result['disc_auc'] = float(objective.binary_auc(cat['disc_labels'], cat['disc_probs'],
                                                    cat['disc_weights']))
  if not all(np.isfinite(v) for k, v in result.items() if k.endswith('_loss')):
    result = {k: float('nan') for k in result}  # accuracies / AUC of NaN outputs mean nothing
  return result


# Config values that must be one of a few strings (the code that reads them raises otherwise).
_CHOICES = {'nan_policy': ('stop', 'skip_step'), 'model.dtype': ('float32', 'bfloat16', 'float16'),
            'model.initializer': ('original', 'normal'),
            'model.kernels': model_lib.KERNELS, 'model.attention': model_lib.ATTENTION,
            'model.embedding_sharing': model_lib.EMBEDDING_SHARING,
            'objective.sampler': ('inverse_cdf', 'gumbel'),
            'optim.schedule': ('electra', 'warmup_linear')}


def _value(config, key):
  for part in key.split('.'):
    config = config[part]
  return config


def check_config(config, num_devices: int):
  """Bad values told as one line before anything is built, restored or written."""
  for key in ('batch_size', 'num_train_steps', 'log_every_steps', 'eval_every_steps', 'eval_steps',
              'checkpoint_every_steps', 'keep_checkpoints', 'grad_accum_steps',
              'max_consecutive_nonfinite'):
    if _value(config, key) < 1:
      raise UserError(f'{key} must be at least 1, got {_value(config, key)}')
  for key, choices in _CHOICES.items():
    if _value(config, key) not in choices:
      raise UserError(f'{key} must be one of {", ".join(map(repr, choices))}, got '
                      f'{_value(config, key)!r}')
  m = config.model
  errors.check_seq_length(config.max_seq_length, m)
  for size in (model_lib.discriminator_size(m), model_lib.generator_size(m)):
    if size.hidden_size % size.num_heads:
      raise UserError(f'hidden size {size.hidden_size} is not divisible by {size.num_heads} heads')
  if not m.untied_generator and m.generator_fraction != 1.0:
    raise UserError('model.untied_generator=False (the generator is the discriminator) needs '
                    'model.generator_fraction=1.0')
  errors.check_divisible('batch_size', config.batch_size, num_devices,
                         f'the {num_devices} devices of the batch axes')
  if config.batch_size % (config.grad_accum_steps * num_devices):
    raise UserError(f'batch_size {config.batch_size} must be divisible by grad_accum_steps '
                    f'{config.grad_accum_steps} x the {num_devices} devices of the batch axes '
                    '(every microbatch is split over all of them)')


def check_data(config, meta: build_data.DataMeta):
  errors.check_vocab_size(meta.vocab_path, meta.vocab_size, config.model.vocab_size)
  if meta.max_seq_length != config.max_seq_length:
    raise UserError(f'the data in {meta.data_dir} has sequences of {meta.max_seq_length} '
                    f'tokens but max_seq_length is {config.max_seq_length}')


def run_info(config, meta: build_data.DataMeta | None = None) -> dict:
  """What a checkpoint's weights are tied to, saved with it: the vocabulary (its SHA-256) and the
  data settings. A resume with other ones is refused (checkpoint.check_run_info): its token ids or
  data would silently differ. Without `meta` (before the data is built) only what the config says.
  """
  settings = meta.settings if meta else build_data.config_settings(config)
  info = {k: settings[k] for k in ('corpus', 'do_lower_case', 'max_seq_length', 'builder_seed',
                                   'num_shards', 'eval_fraction')}
  vocab = meta.vocab_path if meta else config.data.vocab
  if vocab and paths.isfile(vocab):
    info['vocab_sha256'] = paths.file_sha256(vocab)
  return info


def _eta(seconds):
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else \
      f'{seconds // 60}m{seconds % 60:02d}s'


def check_before_data(config, workdir: str):
  """What `train_and_evaluate` would refuse whatever the data: a bad config, an unwritable workdir,
  checkpoints of other data settings or another vocabulary. main.run calls it before building the
  data, so these are told in one line before any data is (re)built."""
  workdir = paths.abspath(workdir)
  mesh = sharding.make_mesh(config.mesh_shape)
  check_config(config, mesh.shape['data'] * mesh.shape['fsdp'])
  paths.make_writable_dir(workdir, 'workdir')
  with workdir_lock.hold(workdir):  # a running run's checkpoints are its own
    manager = checkpoint.checkpoint_manager(workdir, config)
    try:
      checkpoint.check_run_info(manager, run_info(config))
    finally:
      manager.close()


def train_and_evaluate(config, workdir: str) -> dict:
  """Pre-trains ELECTRA per `config` in `workdir` (resuming from its latest checkpoint).

  Reads the data in `config.data.data_dir` (default WORKDIR/data), which must be built already
  (build_data.build_pretraining_data, --mode=build_data; main.run('train', ...) builds, then calls
  this). Returns the final train and eval metrics and the step reached; with `stopped` (the signal's
  name) when SIGTERM / SIGINT ended the run early, its last step checkpointed.
  """
  workdir = paths.abspath(workdir)
  mesh = sharding.make_mesh(config.mesh_shape)
  check_config(config, mesh.shape['data'] * mesh.shape['fsdp'])
  paths.make_writable_dir(workdir, 'workdir')
  with workdir_lock.hold(workdir):  # one run per workdir
    return _train_and_evaluate(config, workdir, mesh)


def _train_and_evaluate(config, workdir: str, mesh) -> dict:
  # A checkpoint of other data or another vocabulary is refused before the data is read.
  manager = checkpoint.checkpoint_manager(workdir, config)
  checkpoint.check_run_info(manager, run_info(config))

  # Data and vocabulary: built beforehand (every process must see the same shards).
  meta = build_data.load_meta(config.data.data_dir or paths.join(workdir, 'data'))
  check_data(config, meta)
  info = run_info(config, meta)
  special = meta.special_ids()
  max_predictions = objective.max_predictions_per_seq(
      config.objective.mask_prob, config.max_seq_length, config.objective.max_predictions)

  # Model, optimizer, state: created on device, already sharded (sharding.param_spec).
  steps = make_steps(config, mesh, special, max_predictions)
  init_rng, train_rng, eval_rng = jax.random.split(jax.random.key(config.seed), 3)
  state = checkpoint.restore_latest(manager, steps.abstract_state, info)
  if state is None:
    state = steps.init(init_rng)
    if config.init_checkpoint:  # a new run from imported weights; the optimizer starts afresh
      from electra_jax import convert  # pylint: disable=g-import-not-at-top
      # gather_to_host: the fresh params may be split across processes; every process calls it.
      imported = convert.initial_params(config, sharding.gather_to_host(state.params),
                                        meta.vocab_path)
      params = jax.device_put(imported, steps.state_sharding.params)
      state = state.replace(params=params, opt_state=jax.jit(
          steps.tx.init, out_shardings=steps.state_sharding.opt_state)(params))
  start_step = int(state.step)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  if jax.process_index() == 0:  # only now that the checkpoint (if any) accepted this config
    with paths.open(paths.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))

  limit = train_state.nonfinite_limit(config)

  log = metrics_log.MetricsLog(workdir, start_step)
  log.write('info', start_step, {'num_params': float(num_params)},
            f'electra_jax: {num_params / 1e6:.2f}M params, {jax.device_count()} devices '
            f'({jax.devices()[0].platform}), mesh {dict(mesh.shape)}, '
            + (f'resuming at step {start_step}' if start_step else 'starting at step 0')
            + f' of {config.num_train_steps}')
  train_iter = input_pipeline.train_batches(config, meta, start_step, jax.process_index(),
                                            jax.process_count())
  eval_batches = lambda: input_pipeline.eval_batches(config, meta, jax.process_index(),
                                                     jax.process_count())
  tokens_per_step = config.batch_size * config.max_seq_length
  train_metrics, eval_metrics = {}, {}
  last_time, last_step = time.perf_counter(), start_step
  stop = preemption.StopRequest()  # SIGTERM / SIGINT from here on: finish the step, save, return
  stopped_at = None
  try:
    for step in range(start_step, config.num_train_steps):
      batch = sharding.global_batch(mesh, next(train_iter))
      state, metrics = steps.train(state, batch, train_rng)
      done = step + 1
      last = done == config.num_train_steps
      stopping = not last and stop.requested(done)  # the last step ends the run anyway
      log_now = done % config.log_every_steps == 0 or last
      eval_now = done % config.eval_every_steps == 0 or last  # due evals run, stopping or not
      save_now = done % config.checkpoint_every_steps == 0 or last or stopping
      if log_now or eval_now or save_now:  # the host waits for the device here anyway
        skipped = train_state.check_finite(state.nonfinite, limit, manager)
      if log_now:
        train_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        now = time.perf_counter()
        steps_per_sec = (done - last_step) / (now - last_time)
        last_time, last_step = now, done
        train_metrics.update(steps_per_sec=steps_per_sec,
                             tokens_per_sec=steps_per_sec * tokens_per_step)
        if skipped:
          train_metrics['nonfinite_steps'] = skipped
        line = (f'step {done}/{config.num_train_steps} | loss {train_metrics["loss"]:.4f} | '
                f'mlm {train_metrics["mlm_loss"]:.3f}')
        if 'disc_loss' in train_metrics:
          line += (f' | disc {train_metrics["disc_loss"]:.4f} auc {train_metrics["disc_auc"]:.3f}'
                   f' acc {train_metrics["disc_accuracy"]:.3f}')
        line += (f' | {train_metrics["tokens_per_sec"]:,.0f} tok/s | '
                 f'ETA {_eta((config.num_train_steps - done) / steps_per_sec)}')
        if skipped:
          line += f' | {skipped} non-finite steps skipped'
        log.write('train', done, train_metrics, line)
      if eval_now:
        eval_metrics = evaluate(steps.eval, state.params, mesh, eval_batches(), eval_rng)
        log.write('eval', done, eval_metrics, f'eval @ {done}: ' + ', '.join(
            f'{k} {v:.4f}' for k, v in eval_metrics.items()))
        last_time = time.perf_counter()  # eval time is not training throughput
      if save_now:
        checkpoint.save(manager, done, state, info)
      if stopping:
        stopped_at = done
        break
  finally:
    stop.restore()
    checkpoint.finish(manager)  # waits for the last asynchronous save

  if stopped_at is not None:
    if jax.process_index() == 0:
      print(f'stopped by {stop.reason} at step {stopped_at} of {config.num_train_steps}: checkpoint '
            f'{stopped_at} is saved in {manager.directory}; run the same command to resume',
            flush=True)
    return {'train': train_metrics, 'eval': eval_metrics, 'step': stopped_at,
            'stopped': stop.reason}
  final_params = sharding.gather_to_host(state.params)  # a collective: every process calls it
  if jax.process_index() == 0:
    checkpoint.export_pretrained(paths.join(workdir, 'pretrained'), final_params, config,
                                 meta.vocab_info())
  return {'train': train_metrics, 'eval': eval_metrics, 'step': int(state.step)}
