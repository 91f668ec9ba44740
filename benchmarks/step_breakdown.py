r"""Where the ELECTRA-Small CPU step's non-matmul time goes: its pieces timed alone, two ways each.

  python benchmarks/step_breakdown.py [--config=configs/small.py --config.batch_size=32]

Times, jitted and warm, at the config's sizes: drawing the replacements over [batch,
max_predictions, vocab] with Gumbel noise (the original's way) and by inverse CDF (ours,
objective.sample_replacements); argmax against max over the same logits (the MLM accuracy);
GELU through erfc (jax.nn.gelu) and through erf (model.gelu) over one layer's FFN activations;
every dropout mask of both encoders drawn as nn.Dropout draws them (one 32-bit uniform, one
threefry hash, per element) and as model.dropout does (16-bit draws, four per fused hash).
"""
import functools
import os

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags

import train_step as train_step_bench
from electra_jax import host_memory
from electra_jax import model as model_lib
from electra_jax import objective

best_seconds = train_step_bench.best_seconds

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/small.py', 'configs/*.py file.')


def dropout_shapes(config):
  """Shapes of every dropout mask of one training step (embeddings, attention probs, 2 per layer)."""
  m, b, t = config.model, config.batch_size, config.max_seq_length
  shapes = [(b, t, m.embedding_size)] * 2  # the shared embeddings, applied for each model
  for size in (model_lib.discriminator_size(m), model_lib.generator_size(m)):
    for _ in range(size.num_layers):
      shapes += [(b, size.num_heads, t, t), (b, t, size.hidden_size), (b, t, size.hidden_size)]
  return shapes


def main(_):
  host_memory.retain_freed_memory()  # as main.py does
  config = _CONFIG.value
  m = config.model
  p = train_step_bench.max_predictions(config)
  logits = jax.random.normal(jax.random.key(0), (config.batch_size, p, m.vocab_size))
  sampler = lambda method: jax.jit(functools.partial(objective.sample_replacements,
                                                     method=method))
  ffn = jax.random.normal(jax.random.key(3), (config.batch_size, config.max_seq_length,
                                               m.intermediate_size))
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
        f'{elements / 1e6:.1f}M elements; generator logits {logits.size / 1e6:.1f}M elements')
  for method in ('gumbel', 'inverse_cdf'):
    print(f'sample_replacements(method={method!r}): '
          f'{best_seconds(sampler(method), jax.random.key(1), logits):.3f}s')
  print(f'argmax over the logits: {best_seconds(jax.jit(lambda x: jnp.argmax(x, -1)), logits):.3f}s'
        f', max: {best_seconds(jax.jit(lambda x: jnp.max(x, -1)), logits):.3f}s')
  erfc_gelu = jax.jit(lambda x: jax.nn.gelu(x, approximate=False))
  print(f'GELU of {ffn.shape}: jax.nn.gelu (erfc) {best_seconds(erfc_gelu, ffn):.4f}s, '
        f'model.gelu (erf) {best_seconds(jax.jit(model_lib.gelu), ffn):.4f}s')
  print(f'dropout masks as nn.Dropout: {best_seconds(jax.jit(masks_nn_dropout), jax.random.key(2)):.3f}s')
  print(f'dropout masks as model.dropout: {best_seconds(jax.jit(masks_ours), jax.random.key(2)):.3f}s')


if __name__ == '__main__':
  app.run(main)
