"""Shared test set-up: 8 simulated CPU devices (set before jax is imported) and tiny configs."""
import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
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
