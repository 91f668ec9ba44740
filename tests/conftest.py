"""Shared test set-up: 8 simulated CPU devices (set before jax is imported) and tiny configs."""
import os

# Optimization level 0: XLA's CPU backend then compiles the tiny test models ~3x faster (12 s -> 4 s
# for a train step on 2 busy cores); they run in milliseconds either way.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_backend_optimization_level=0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from electra_jax import defaults  # pylint: disable=g-import-not-at-top,wrong-import-position


def tiny_config(vocab_size=128, **overrides):
  """2 layers, hidden 32, generator hidden 16: compiles in seconds on CPU."""
  c = defaults.get_default_config()
  c.batch_size = 8
  c.max_seq_length = 16
  c.num_train_steps = 6
  c.model.vocab_size = vocab_size
  c.model.embedding_size = 24
  c.model.hidden_size = 32
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.intermediate_size = 64
  c.model.max_position_embeddings = 32
  c.model.generator_fraction = 0.5
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 2
  c.log_every_steps = 1
  c.eval_every_steps = 3
  c.eval_steps = 2
  c.checkpoint_every_steps = 3
  c.async_checkpoints = False
  c.mesh_shape = (1, 1, 1)  # one of the 8 simulated devices: fast; sharding tests set their own
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture
def tiny():
  return tiny_config


def ragged_batch(min_len):
  """8 rows of 16 ids in [5, 128), [CLS]=2 first, real lengths min_len..16 (so per-token
  normalization matters), as one global numpy batch."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 128, (8, 16)).astype(np.int32)
  ids[:, 0] = 2
  mask = (np.arange(16)[None, :] < rng.integers(min_len, 17, (8, 1))).astype(np.int32)
  return {'input_ids': ids * mask, 'input_mask': mask, 'segment_ids': np.zeros_like(ids)}


def fixed_uniform(key, shape=(), dtype=None, minval=0.0, maxval=1.0):
  """A stand-in for jax.random.uniform whose draws repeat on every row: a microbatch then sees the
  same masks and samples as its rows in the whole batch, so accumulation must match exactly."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  del key
  per_row = (jnp.arange(int(np.prod(shape[1:])), dtype=jnp.float32) * 0.6180339 + 0.1) % 1.0
  values = jnp.broadcast_to(per_row.reshape(shape[1:]), shape)
  return (minval + (maxval - minval) * values).astype(jnp.float32 if dtype is None else dtype)


def run_train_steps(config, batch, num_steps=3, special=(0, 2, 3, 4), max_predictions=3,
                    init_rng=None, step_rng=None):
  """`num_steps` jitted train steps on the mesh `config.mesh_shape`, states sharded as in train.py.

  `batch` is one global numpy batch (used every step) or a list of them. Returns (final state,
  params as numpy, metrics of the last step as numpy, per-step losses).
  """
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from electra_jax import model as model_lib, objective, optim, sharding, train  # pylint: disable=g-import-not-at-top
  model = model_lib.make_pretrainer(config)
  lr = optim.learning_rate_schedule(config.optim, config.num_train_steps)
  tx = optim.make_optimizer(config.optim, config.num_train_steps, lr)
  mesh = sharding.make_mesh(config.mesh_shape)
  create = functools.partial(train.create_train_state, model, tx)
  init_rng = jax.random.key(0) if init_rng is None else init_rng
  state_sharding = sharding.state_shardings(mesh, jax.eval_shape(create, init_rng),
                                            config.fsdp_min_size)
  state = jax.jit(create, out_shardings=state_sharding)(init_rng)
  step = jax.jit(functools.partial(
      train.train_step, model=model, tx=tx, learning_rate_fn=lr, objective_config=config.objective,
      special=objective.SpecialIds(*special), max_predictions=max_predictions,
      grad_accum_steps=config.grad_accum_steps),
      in_shardings=(state_sharding, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)))
  batches = batch if isinstance(batch, list) else [batch] * num_steps
  step_rng = jax.random.key(1) if step_rng is None else step_rng
  losses = []
  for b in batches:
    state, metrics = step(state, sharding.global_batch(mesh, b), step_rng)
    losses.append(float(metrics['loss']))
  return state, jax.device_get(state.params), jax.device_get(metrics), losses


# The longest tests (minutes each on 2 CPU cores), started first: pytest-xdist hands tests out in
# collection order, and one of these started last would leave a worker running it alone.
_LONGEST_FIRST = ('test_notebook.py::test_notebook_runs_and_shows_learning',
                  'test_train.py::test_sigterm_saves_its_step',
                  'test_train.py::test_training_learns_and_writes_everything',
                  'test_gcs.py::')


def pytest_collection_modifyitems(items):
  rank = lambda item: next((i for i, name in enumerate(_LONGEST_FIRST) if name in item.nodeid),
                           len(_LONGEST_FIRST))
  items.sort(key=rank)
