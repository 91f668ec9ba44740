r"""Where the ELECTRA-Small CPU step's non-matmul time goes: the random numbers, timed alone.

  python benchmarks/step_breakdown.py [--config=configs/small.py --config.batch_size=32]

Times, jitted and warm, the per-step random draws at the config's sizes: the generator's Gumbel
noise over [batch, max_predictions, vocab] (objective.sample_replacements) and every dropout mask
of both encoders, drawn as nn.Dropout draws them (one 32-bit uniform, one threefry hash, per
element) and as model.dropout does (16-bit draws, four per hash).
"""
import functools
import os
import time

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags

import train_step as train_step_bench
from electra_jax import model as model_lib
from electra_jax import objective

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/small.py', 'configs/*.py file.')


def best_seconds(fn, *args, repeats=3):
  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def dropout_shapes(config):
  """Shapes of every dropout mask of one training step (embeddings, attention probs, 2 per layer)."""
  m, b, t = config.model, config.batch_size, config.max_seq_length
  shapes = [(b, t, m.embedding_size)] * 2  # the shared embeddings, applied for each model
  for size in (model_lib.discriminator_size(m), model_lib.generator_size(m)):
    for _ in range(size.num_layers):
      shapes += [(b, size.num_heads, t, t), (b, t, size.hidden_size), (b, t, size.hidden_size)]
  return shapes


def main(_):
  config = _CONFIG.value
  m = config.model
  p = train_step_bench.max_predictions(config)
  logits = jax.random.normal(jax.random.key(0), (config.batch_size, p, m.vocab_size))
  gumbel = jax.jit(functools.partial(objective.sample_replacements, temperature=1.0))
  shapes = dropout_shapes(config)

  def masks_nn_dropout(key):
    keys = jax.random.split(key, len(shapes))
    return [jax.random.bernoulli(k, 0.9, s) for k, s in zip(keys, shapes)]

  class Masks(model_lib.nn.Module):
    @model_lib.nn.compact
    def __call__(self):
      return [model_lib.dropout(self, jnp.ones(s), 0.1, False) != 0 for s in shapes]

  masks_ours = lambda key: Masks().apply({}, rngs={'dropout': key})
  elements = sum(int(jnp.prod(jnp.array(s))) for s in shapes)
  print(f'load average {os.getloadavg()[0]:.2f}; {len(shapes)} dropout masks, '
        f'{elements / 1e6:.1f}M elements; Gumbel noise {logits.size / 1e6:.1f}M elements')
  print(f'Gumbel sampling (objective.sample_replacements): '
        f'{best_seconds(gumbel, jax.random.key(1), logits):.3f}s')
  print(f'dropout masks as nn.Dropout: {best_seconds(jax.jit(masks_nn_dropout), jax.random.key(2)):.3f}s')
  print(f'dropout masks as model.dropout: {best_seconds(jax.jit(masks_ours), jax.random.key(2)):.3f}s')


if __name__ == '__main__':
  app.run(main)
