r"""Times the jitted pre-training step of a config on random batches (compile excluded).

  python benchmarks/train_step.py --config=configs/small.py [--config.batch_size=32] [--steps=20]

Prints compile time, steps/s and tokens/s (batch x sequence length per second). No data, no
checkpoints: just the step that train.py runs. `build_step` is shared with pretrain_vs_pytorch.py.
"""
import functools
import time

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from electra_jax import host_memory
from electra_jax import model as model_lib
from electra_jax import objective
from electra_jax import optim
from electra_jax import sharding
from electra_jax import train

# BERT uncased ids; random batches only need them to differ from the random tokens (>= 1000).
SPECIAL = objective.SpecialIds(pad_id=0, cls_id=101, sep_id=102, mask_id=103)


def random_batch(config, seed=0):
  """[CLS] random tokens [SEP], no padding: int32 numpy arrays."""
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.max_seq_length)
  ids = rng.integers(1000, config.model.vocab_size, shape).astype(np.int32)
  ids[:, 0] = SPECIAL.cls_id
  ids[:, -1] = SPECIAL.sep_id
  return {'input_ids': ids, 'input_mask': np.ones(shape, np.int32),
          'segment_ids': np.zeros(shape, np.int32)}


def build_step(config):
  """Returns (step, state, batch, key): `step(state, batch, key) -> (state, metrics)` is train.py's
  jitted step (state donated), on a random batch already on the devices."""
  mesh = sharding.make_mesh(config.mesh_shape)
  model = model_lib.make_pretrainer(config)
  lr = optim.learning_rate_schedule(config.optim, config.num_train_steps)
  tx = optim.make_optimizer(config.optim, config.num_train_steps, lr)
  repl = sharding.replicated(mesh)
  state = jax.jit(functools.partial(train.create_train_state, model, tx),
                  out_shardings=repl)(jax.random.key(0))
  step = jax.jit(functools.partial(
      train.train_step, model=model, tx=tx, learning_rate_fn=lr,
      objective_config=config.objective, special=SPECIAL,
      max_predictions=max_predictions(config)),
      in_shardings=(repl, sharding.batch_sharding(mesh), repl), out_shardings=(repl, repl),
      donate_argnums=(0,))
  batch = sharding.global_batch(mesh, random_batch(config))
  return step, state, batch, jax.random.key(1)


def best_seconds(fn, *args, repeats=3):
  """The fastest of `repeats` timed calls of fn(*args), after one untimed (compiling) call."""
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def max_predictions(config):
  return objective.max_predictions_per_seq(config.objective.mask_prob, config.max_seq_length,
                                           config.objective.max_predictions)


def main(_):
  if flags.FLAGS.retain_freed_memory:
    host_memory.retain_freed_memory()  # as main.py does, before JAX starts its threads
  config = flags.FLAGS.config
  step, state, batch, key = build_step(config)
  shape = batch['input_ids'].shape
  t0 = time.perf_counter()
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  for _ in range(3):  # untimed: the first steps dispatched back to back still grow the heap
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(flags.FLAGS.steps):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(f'{n_params / 1e6:.1f}M params, batch {shape[0]} x seq {shape[1]}, '
        f'{jax.device_count()} x {jax.devices()[0].device_kind}, dtype {config.model.dtype}')
  print(f'compile+first step {compile_s:.1f}s | {flags.FLAGS.steps / elapsed:.3f} steps/s | '
        f'{flags.FLAGS.steps * shape[0] * shape[1] / elapsed:,.0f} tokens/s | '
        f'loss {float(metrics["loss"]):.3f}')


if __name__ == '__main__':
  # Flags only when run as a script: pretrain_vs_pytorch.py imports this module and has its own.
  config_flags.DEFINE_config_file('config', None, 'configs/*.py file.', lock_config=True)
  flags.DEFINE_integer('steps', 20, 'Timed steps after 1 + 3 warm-up steps.')
  flags.DEFINE_bool('retain_freed_memory', True, 'host_memory.retain_freed_memory() first.')
  app.run(main)
