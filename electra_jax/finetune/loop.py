"""Fine-tuning: `run(config, workdir)` trains one model per seed and reports each and the median.

One readable loop (`finetune_one_seed`) on the pre-training core: model.Embeddings/Transformer under
the pre-training names, optim.make_optimizer with layer-wise LR decay, the mesh from sharding.py,
metrics_log.MetricsLog for console/TensorBoard/metrics.jsonl. The jitted step is pure:
(state, batch, rng) -> (state, metrics), with dropout rng = fold_in(rng, step); the batch at step N
is a fixed function of (seed, N), so a run is reproducible.

Outputs, in WORKDIR: results.json (every seed's best dev metrics and the median over seeds) and per
seed WORKDIR/seed_<S>/{metrics.jsonl, tensorboard/, predictions/} (test-set predictions in the GLUE
submission format, SQuAD predictions JSON, tagged CoNLL files, made with the best dev checkpoint).
Each seed checkpoints its train state at every eval (WORKDIR/seed_<S>/checkpoints, orbax, as
pre-training) with that eval's dev metrics, and orbax keeps the best of them besides the latest;
rerunning the same command resumes each seed from its latest checkpoint, bit for bit (a finished
seed only re-predicts).
"""
import difflib
import functools
import json
import math
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from electra_jax import checkpoint
from electra_jax import errors
from electra_jax import metrics_log
from electra_jax import model as model_lib
from electra_jax import optim
from electra_jax import paths
from electra_jax import preemption
from electra_jax import sharding
from electra_jax import tokenization
from electra_jax import train_state
from electra_jax import workdir_lock
from electra_jax.errors import UserError
from electra_jax.finetune import model as ft_model
from electra_jax.finetune import probe


# ---- Set-up: pre-trained weights, vocabulary, task.

def load_init_checkpoint(config):
  """-> (model config, {embeddings, discriminator} params or None, vocab path, do_lower_case).

  `init_checkpoint` is read by convert.read: an electra_jax pre-training workdir or its
  pretrained/ dir, a HF ELECTRA discriminator dir, or a Google TF1 checkpoint prefix (e.g. the
  released ELECTRA-Small). `data.vocab`, when set, replaces the vocabulary found there.
  """
  path = config.init_checkpoint
  if not path:
    if not config.data.vocab:
      raise UserError('set --config.init_checkpoint=PRETRAINING_WORKDIR (or, to fine-tune a '
                      'randomly initialized model, --config.data.vocab=VOCAB_FILE)')
    print('fine-tuning from a RANDOM initialization (no --config.init_checkpoint)', flush=True)
    return (ml_collections.ConfigDict(config.model.to_dict()), None, config.data.vocab,
            config.data.do_lower_case)
  from electra_jax import convert  # pylint: disable=g-import-not-at-top
  weights = convert.read(path, vocab=config.data.vocab, do_lower_case=config.data.do_lower_case)
  if weights.discriminator is None:
    raise UserError(f'{path} holds no discriminator (a generator only?); fine-tuning needs it')
  body = {k: weights.discriminator[k] for k in ft_model.BODY_KEYS}
  model_config = ml_collections.ConfigDict(weights.model.to_dict())
  # Compute dtype, kernels, remat and dropout are choices of this run, not the checkpoint's (the
  # original fine-tunes with its own dropout 0.1 whatever pre-training used).
  for key in ('dtype', 'kernels', 'attention', 'remat', 'dropout_rate', 'attention_dropout_rate'):
    model_config[key] = config.model[key]
  vocab_path = weights.vocab.get('vocab_path', '')
  if vocab_path and not paths.exists(vocab_path):  # the workdir moved: look next to the weights
    for directory in (path, paths.join(path, 'pretrained'), paths.join(path, 'data')):
      candidate = paths.join(directory, paths.basename(vocab_path))
      if paths.exists(candidate):
        vocab_path = candidate
        break
  if not vocab_path:
    raise UserError(f'{path} names no vocabulary; set --config.data.vocab')
  return (model_config, body, vocab_path,
          weights.vocab.get('do_lower_case', config.data.do_lower_case))


def make_task(config, tokenizer):
  name = config.task.lower()
  if name in ('chunk', 'ner') or name.startswith('tagging'):
    from electra_jax.finetune import tagging  # pylint: disable=g-import-not-at-top
    return tagging.TaggingTask(config, tokenizer)
  if name.startswith('squad') or name.startswith('mrqa'):
    from electra_jax.finetune import qa  # pylint: disable=g-import-not-at-top
    return qa.QATask(config, tokenizer)
  from electra_jax.finetune import classification  # pylint: disable=g-import-not-at-top
  return classification.ClassificationTask(config, tokenizer)


def load_body(params, body):
  """Puts the pre-trained embeddings + discriminator into freshly initialized params, by key."""
  if body is None:
    return params
  fresh = {k: params[k] for k in ft_model.BODY_KEYS}
  want = jax.tree_util.tree_flatten_with_path(fresh)[0]
  have = dict((jax.tree_util.keystr(p), v) for p, v in
              jax.tree_util.tree_flatten_with_path(body)[0])
  for path, leaf in want:
    key = jax.tree_util.keystr(path)
    if key not in have or tuple(have[key].shape) != tuple(leaf.shape):
      got = 'missing' if key not in have else f'shape {tuple(have[key].shape)}'
      raise UserError(f'pre-trained weights do not fit the model: {key} is {got}, expected '
                      f'{tuple(leaf.shape)}')
  return dict(params, **jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), body))


# ---- The pure steps.

def train_step(state, batch, rng, *, model, tx, learning_rate_fn, answerable_weight,
               loss_reduction='sum', max_nonfinite_in_a_row=1):
  dropout_rng = jax.random.fold_in(rng, state.step)
  # QA's joint end head is conditioned on the gold start while training.
  extra = {'start_positions': batch['start_position']} if model.head == 'qa' else {}

  def loss_fn(params):
    outputs = model.apply({'params': params}, batch['input_ids'], batch['input_mask'],
                          batch['segment_ids'], deterministic=False, rngs={'dropout': dropout_rng},
                          **extra)
    return ft_model.loss_fn(model.head, outputs, batch, answerable_weight, loss_reduction)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': learning_rate_fn(state.step)}
  checked = {'loss': loss, 'grad_norm': metrics['grad_norm']}
  return train_state.apply_if_finite(state, grads, checked, tx, max_nonfinite_in_a_row), metrics


def predict_step(params, batch, *, model):
  outputs = model.apply({'params': params}, batch['input_ids'], batch['input_mask'],
                        batch['segment_ids'], deterministic=True)
  return ft_model.predictions(model.head, outputs)


def predict(p_predict, params, arrays, batch_size, mesh) -> dict:
  """Predictions for every example of `arrays` (the last batch padded, then cut)."""
  n = len(arrays['input_ids'])
  parts = []
  for start in range(0, n, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in arrays.items()}
    real = len(batch['input_ids'])
    if real < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - real,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    local = _process_slice(batch)
    out = jax.device_get(p_predict(params, sharding.global_batch(mesh, local)))
    parts.append({k: np.asarray(v)[:real] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _process_slice(global_batch: dict) -> dict:
  """This process's contiguous share of a global batch."""
  count, index = jax.process_count(), jax.process_index()
  size = len(global_batch['input_ids']) // count
  return {k: v[index * size:(index + 1) * size] for k, v in global_batch.items()}


@functools.lru_cache(maxsize=2)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_batch(arrays: dict, step: int, batch_size: int, seed: int) -> dict:
  """The global batch of step N: epoch e = N // steps_per_epoch reads a permutation of (seed, e);
  the last partial batch of an epoch is dropped."""
  n = len(arrays['input_ids'])
  epoch, within = divmod(step, n // batch_size)
  rows = _epoch_order(seed, epoch, n)[within * batch_size:(within + 1) * batch_size]
  return {k: v[rows] for k, v in arrays.items()}


# ---- One seed.

def train_steps(config, num_examples: int, task_epochs: float) -> int:
  """num_train_steps, or the original's count: (examples // batch) x epochs, rounded down."""
  epochs = config.num_train_epochs or task_epochs
  return config.num_train_steps or max(1, int(num_examples // config.batch_size * epochs))


def finetune_schedule(config, num_train_steps: int):
  """The learning rate by step; warmup = warmup_proportion x steps, fractional as the original."""
  return optim.learning_rate_schedule(config.optim, num_train_steps,
                                      config.warmup_proportion * num_train_steps)


def dev_rank(metrics):
  """What orbax ranks a seed's checkpoints by (the highest is the best): the dev score, then the
  earlier step. orbax picks the last of a stable ascending sort, which of equal scores would be the
  latest; a later eval has to beat the best score so far to replace it, so of equal scores the
  earliest stays the best."""
  return metrics['score'], -metrics['step']


def finetune_one_seed(config, task, model_config, body, seed: int, workdir: str, mesh,
                      run_info=None, accepted=lambda: None) -> dict:
  """Trains, evaluates and predicts one seed in `workdir`, resuming from its latest checkpoint.

  `run_info`: what the weights are tied to, saved with each checkpoint and checked on resume;
  `accepted()` is called once the checkpoint (if any) was restored.
  """
  paths.makedirs(workdir)
  # Kernels and attention for the mesh's devices (splash attention on TPU runs per shard).
  model_config = model_lib.with_kernels(model_config, mesh.devices.flat[0].platform)
  in_mesh = (functools.partial(sharding.traced_in_mesh, mesh)
             if model_config.attention.startswith('splash') else lambda fn: fn)
  model = ft_model.make_model(model_config, task.head, task.num_outputs, config)
  num_examples = len(task.train['input_ids'])
  batch_size = config.batch_size
  if num_examples < batch_size:
    raise UserError(f'{task.name} has {num_examples} training examples, fewer than batch_size '
                    f'{batch_size}; lower --config.batch_size')
  num_train_steps = train_steps(config, num_examples, task.epochs)
  epochs = num_train_steps * batch_size / num_examples  # what runs (num_train_steps may override)
  eval_every = config.eval_every_steps or num_examples // batch_size
  learning_rate_fn = finetune_schedule(config, num_train_steps)
  init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
  params = load_body(jax.device_get(ft_model.init_params(model, init_rng)), body)
  if config.layerwise_lr_decay not in (0, 1.0):
    if config.layerwise_decay_rule not in ('correct', 'original'):
      raise UserError("layerwise_decay_rule must be 'correct' or 'original'")
    lr_factors = optim.layerwise_lr_factors(params, model_config.num_layers,
                                            config.layerwise_lr_decay,
                                            config.layerwise_decay_rule == 'original')
  else:
    lr_factors = None
  tx = optim.make_optimizer(config.optim, num_train_steps, learning_rate_fn, lr_factors)
  repl = sharding.replicated(mesh)
  params = jax.device_put(params, repl)
  state = train_state.TrainState(jax.device_put(jnp.zeros((), jnp.int32), repl), params,
                                 jax.jit(tx.init, out_shardings=repl)(params),
                                 jax.device_put(train_state.new_nonfinite_record(), repl))
  batch_shard = sharding.batch_sharding(mesh)
  limit = train_state.nonfinite_limit(config)
  train_step_fn = jax.jit(
      in_mesh(functools.partial(train_step, model=model, tx=tx, learning_rate_fn=learning_rate_fn,
                                answerable_weight=config.qa.answerable_weight,
                                loss_reduction=config.loss_reduction,
                                max_nonfinite_in_a_row=limit)),
      in_shardings=(repl, batch_shard, repl), out_shardings=(repl, repl), donate_argnums=(0,))
  p_predict = jax.jit(in_mesh(functools.partial(predict_step, model=model)),
                      in_shardings=(repl, batch_shard), out_shardings=repl)
  eval_batch_size = config.eval_batch_size or batch_size

  # Resume: the latest checkpoint (saved at every eval, with its dev metrics: the manager keeps
  # the best one too).
  manager = checkpoint.checkpoint_manager(workdir, config, best_fn=dev_rank)
  abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl),
                                state)
  # probe_only saves nothing, and a fine-tuned checkpoint of the same workdir is not its result.
  restored = (None if config.probe_only
              else checkpoint.restore_latest(manager, abstract_state, run_info))
  if restored is not None:
    state = restored
  elif config.head_init == 'probe':  # the head fit on the frozen encoder's features first
    p_features = jax.jit(in_mesh(functools.partial(probe.cls_features, model=model)),
                         in_shardings=(repl, batch_shard), out_shardings=repl)
    features = predict(p_features, state.params, task.train, eval_batch_size, mesh)['cls']
    head, l2 = probe.fit_head(features, task.train['label'], task.num_outputs,
                              regression=task.head == 'regression')
    state = state.replace(params=dict(state.params, classifier=jax.device_put(head, repl)))
    probed = {split: task.evaluate(split, predict(p_predict, state.params, arrays,
                                                  eval_batch_size, mesh))
              for split, arrays in task.eval_sets.items()}
    print(f'{task.name} seed {seed}: head fit on the frozen [CLS] features (l2 {l2:g})'
          + ''.join(f', {split} ' + ', '.join(f'{k} {v:.2f}' for k, v in r.items()
                                               if isinstance(v, (int, float)))
                    for split, r in probed.items()), flush=True)
    if config.probe_only:  # that probe is the result (below): no fine-tuning step
      num_train_steps = 0
  start_step = int(state.step)
  accepted()  # the checkpoint (if any) took this config: now it may be written down

  log = metrics_log.MetricsLog(workdir, start_step)
  if not config.probe_only:
    log.write('info', start_step, {'num_train_steps': float(num_train_steps)},
              f'{task.name} seed {seed}: {num_examples} train examples, {num_train_steps} steps '
              f'({epochs:.3g} epochs of batch {batch_size}), eval every {eval_every} steps'
              + (f', resuming at step {start_step}' if start_step else ''))
  last_time = time.perf_counter()
  stop = preemption.StopRequest()  # SIGTERM / SIGINT from here on: finish the step, save, return
  stopped_at, best = None, None
  try:
    for step in range(start_step, num_train_steps):
      batch = train_batch(task.train, step, batch_size, seed)
      state, metrics = train_step_fn(state, sharding.global_batch(mesh, _process_slice(batch)),
                                     dropout_rng)
      done = step + 1
      last = done == num_train_steps
      stopping = not last and stop.requested(done)
      log_now = done % config.log_every_steps == 0 or last
      # A due eval runs even when stopping: the best weights kept are then a straight run's.
      eval_now = done % eval_every == 0 or last
      if log_now or eval_now or stopping:  # the host waits for the device here anyway
        train_state.check_finite(state.nonfinite, limit, manager)
      if log_now:
        now = time.perf_counter()
        train_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        train_metrics['steps_per_sec'] = config.log_every_steps / max(now - last_time, 1e-9)
        last_time = now
        log.write('train', done, train_metrics,
                  f'step {done}/{num_train_steps} | loss {train_metrics["loss"]:.4f} | '
                  f'lr {train_metrics["learning_rate"]:.2e}')
      dev_metrics = None  # saved with this step's checkpoint: what ranks it (`dev_rank`)
      if eval_now:
        if task.eval_sets:
          results = {split: task.evaluate(split, predict(p_predict, state.params, arrays,
                                                          eval_batch_size, mesh))
                     for split, arrays in task.eval_sets.items()}
          flat = {f'{split}/{k}': v for split, r in results.items() for k, v in r.items()
                  if isinstance(v, (int, float))}
          log.write('eval', done, flat, f'eval @ {done}: ' + ', '.join(
              f'{k} {v:.2f}' for k, v in flat.items()))
          score = results[next(iter(results))]['score']  # the first dev split selects
          if score > -math.inf:  # a NaN score beats nothing: saved without metrics, never the best
            dev_metrics = {'score': score, 'step': done, 'results': results}
      if eval_now or stopping:
        checkpoint.save(manager, done, state, run_info, metrics=dev_metrics)
        last_time = time.perf_counter()
      if stopping:
        stopped_at = done
        break
    if stopped_at is None and not config.probe_only:
      checkpoint.wait(manager)  # the best checkpoint may be the save still being written
      best_step = manager.best_step()  # None: no save had a dev score
      if best_step is not None:
        best = {'step': best_step, 'metrics': manager.metrics(best_step)['results']}
        state = None  # one train state in memory at a time: the best one replaces the last
        try:
          state = checkpoint.restore(manager, best_step, abstract_state)
        except UserError as e:
          raise UserError(f'{e}; it holds the best dev weights: delete {workdir} to retrain this '
                          'seed') from None
  finally:
    stop.restore()
    checkpoint.finish(manager)  # waits for the last asynchronous save
  if stopped_at is not None:
    print(f'{task.name} seed {seed}: stopped by {stop.reason} at step {stopped_at} of '
          f'{num_train_steps}: checkpoint {stopped_at} is saved in {manager.directory}; run the '
          'same command to resume', flush=True)
    return {'seed': seed, 'stopped': stop.reason}
  if best is None:  # no dev score: the final weights (probe_only: the probe's score)
    best = {'step': num_train_steps, 'metrics': probed if config.probe_only else {}}

  # Test (and, for tagging/QA, dev) predictions of the best weights (`state`). Every process
  # predicts (the jitted call spans all devices); process 0 writes.
  written = []
  params = state.params
  out_dir = paths.join(workdir, 'predictions')
  to_write = [(task.write_predictions, split, arrays) for split, arrays in task.test_sets.items()]
  if hasattr(task, 'write_eval_predictions'):
    to_write += [(task.write_eval_predictions, split, arrays)
                 for split, arrays in task.eval_sets.items()]
  for write, split, arrays in to_write:
    predictions = predict(p_predict, params, arrays, eval_batch_size, mesh)
    if jax.process_index() == 0:
      files = write(split, predictions, out_dir)
      written += [files] if isinstance(files, str) else files
  return {'seed': seed, 'best_step': best['step'], 'num_train_steps': num_train_steps,
          'best': best['metrics'], 'predictions': written}


# ---- Several seeds.

# Task names make_task knows; any other name with custom.train_file set is a custom task.
_KNOWN_TASKS = ('chunk', 'ner', 'squad1', 'squad2', 'mrqa')


def _is_custom(config) -> bool:
  from electra_jax.finetune import classification  # pylint: disable=g-import-not-at-top
  name = config.task.lower()
  return not (classification.glue_task(name) or name in _KNOWN_TASKS
              or name.startswith(('tagging', 'mrqa')))


def check_config(config, num_batch_devices: int):
  """Bad values told as one line before anything is read or written."""
  from electra_jax.finetune import classification  # pylint: disable=g-import-not-at-top
  if _is_custom(config) and not config.custom.train_file:
    if config.task.lower() == 'custom':
      raise UserError('task custom needs --config.custom.train_file (a .tsv, .csv or .jsonl file)')
    names = list(classification.GLUE) + list(_KNOWN_TASKS) + ['custom']
    close = difflib.get_close_matches(config.task.lower(), names, n=1)
    raise UserError(f'unknown task {config.task!r}' + (f' (did you mean {close[0]!r}?)' if close
                                                         else '')
                    + f': use a GLUE task ({", ".join(classification.GLUE)}), chunk, ner, squad1, '
                    'squad2, mrqa[_NAME], or a task of your own with --config.custom.train_file')
  if not _is_custom(config) and not config.data_dir:
    raise UserError(f'set --config.data_dir to the folder holding the {config.task} data')
  for key in ('batch_size', 'eval_batch_size', 'log_every_steps', 'num_trials', 'keep_checkpoints',
              'max_consecutive_nonfinite'):
    if config[key] < 1:
      raise UserError(f'{key} must be at least 1, got {config[key]}')
  for key in ('eval_every_steps', 'num_train_steps', 'num_train_epochs', 'max_seq_length'):
    if config[key] < 0:
      raise UserError(f'{key} must not be negative, got {config[key]}')
  for key, choices in (('nan_policy', ('stop', 'skip_step')), ('loss_reduction', ('sum', 'mean')),
                       ('layerwise_decay_rule', ('original', 'correct')),
                       ('head_init', ('random', 'probe'))):
    if config[key] not in choices:
      raise UserError(f'{key} must be one of {", ".join(map(repr, choices))}, got {config[key]!r}')
  for name in ('batch_size', 'eval_batch_size'):
    errors.check_divisible(name, config[name], num_batch_devices,
                           f'the {num_batch_devices} devices of the batch axes')


def run(config, workdir: str) -> dict:
  """Fine-tunes `config.num_trials` models (seeds config.seed, seed+1, ...); writes results.json.

  With `stopped` (the signal's name) in the result when SIGTERM / SIGINT ended it early.
  """
  workdir = paths.abspath(workdir)
  config = ml_collections.ConfigDict(config.to_dict())  # a copy: task defaults get filled in
  mesh = sharding.make_mesh(config.mesh_shape)
  check_config(config, mesh.shape['data'] * mesh.shape['fsdp'])
  paths.make_writable_dir(workdir, 'workdir')
  with workdir_lock.hold(workdir):  # one run per workdir
    return _run(config, workdir, mesh)


def default_max_seq_length(task: str) -> int:
  """The original's per-task default (configure_finetuning.py): QA 512, chunking 256, else 128."""
  task = task.lower()
  if task.startswith(('squad', 'mrqa')):
    return 512
  return 256 if task == 'chunk' else 128


def _run(config, workdir: str, mesh) -> dict:
  if not config.max_seq_length:
    config.max_seq_length = default_max_seq_length(config.task)
  model_config, body, vocab_path, do_lower_case = load_init_checkpoint(config)
  tokenizer = tokenization.load_tokenizer(vocab_path, do_lower_case)
  errors.check_vocab_size(vocab_path, tokenizer.vocab_size, model_config.vocab_size,
                          settable=False)
  errors.check_seq_length(config.max_seq_length, model_config, settable=False)
  task = make_task(config, tokenizer)
  if config.probe_only:  # the head is fit as head_init='probe' fits it, and not fine-tuned
    config.head_init = 'probe'
  if config.head_init == 'probe' and task.head not in ('classification', 'regression'):
    option = 'probe_only' if config.probe_only else "head_init='probe'"
    raise UserError(f'{option} fits a classification or regression head; {task.name} has a '
                    f'{task.head} head' + ('' if config.probe_only else ' (use head_init=random)'))
  # What each seed's checkpoints are tied to (checkpoint.check_run_info).
  run_info = {'task': task.name, 'vocab_sha256': paths.file_sha256(vocab_path),
              'max_seq_length': config.max_seq_length,
              'labels': list(getattr(task, 'labels', None) or [])}

  def write_config():
    if jax.process_index() == 0:
      with paths.open(paths.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))

  seeds = [config.seed + i for i in range(config.num_trials)]
  per_seed = []
  for seed in seeds:
    per_seed.append(finetune_one_seed(config, task, model_config, body, seed,
                                      paths.join(workdir, f'seed_{seed}'), mesh, run_info,
                                      accepted=write_config if seed == seeds[0] else lambda: None))
    if 'stopped' in per_seed[-1]:
      return {'task': task.name, 'seeds': per_seed, 'stopped': per_seed[-1]['stopped']}
    print(f'seed {seed}: ' + json.dumps(per_seed[-1]['best']), flush=True)
  median = {}
  for split in per_seed[0]['best']:
    for metric in per_seed[0]['best'][split]:
      values = [r['best'][split][metric] for r in per_seed]
      if all(isinstance(v, (int, float)) for v in values):
        median.setdefault(split, {})[metric] = float(np.median(values))
  results = {'task': task.name, 'seeds': per_seed, 'median': median}
  if jax.process_index() == 0:
    with paths.open(paths.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=2)
    print(f'{task.name}: median over {len(seeds)} seed(s): {json.dumps(median)} '
          f'(all in {paths.join(workdir, "results.json")})', flush=True)
  return results
