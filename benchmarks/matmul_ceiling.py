r"""How much of the fp32 matmul peak XLA's CPU backend reaches on a transformer's own matmuls.

  python benchmarks/matmul_ceiling.py [--config=configs/small.py --config.batch_size=32]

MFU in pretrain_vs_pytorch.py divides by the best rate of one large (2048^3) jnp.dot. This script
times, at the config's discriminator sizes (tokens = batch x seq, hidden H, FFN width F), matmuls
alone, with nothing else in the program:
  - each feed-forward matmul of a layer and of its backward pass, one at a time;
  - a stack of num_layers feed-forward blocks x + relu(x W1) W2, forward only and forward+backward
    (jax.grad), as rates over the stack's matmul FLOPs.
The forward+backward rate is a ceiling for the whole training step's MFU on this backend: the
step adds attention's small batched matmuls, LayerNorm, dropout, softmax and the optimizer on top.
"""
import functools
import os

from absl import app
import jax
import jax.numpy as jnp
from ml_collections import config_flags

import train_step as train_step_bench  # benchmarks/ is the script's directory, hence on sys.path
from electra_jax import host_memory

seconds = functools.partial(train_step_bench.best_seconds, repeats=5)

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/small.py', 'configs/*.py file.')


def main(_):
  host_memory.retain_freed_memory()  # as main.py does
  c = _CONFIG.value
  n, h, f = c.batch_size * c.max_seq_length, c.model.hidden_size, c.model.intermediate_size
  keys = iter(jax.random.split(jax.random.key(0), 8 + 2 * c.model.num_layers))
  normal = lambda *shape: jax.random.normal(next(keys), shape) * 0.05
  size = 2048
  square = normal(size, size)
  peak = 2 * size**3 / seconds(jax.jit(lambda a: a @ a), square) / 1e9
  print(f'load average {os.getloadavg()[0]:.2f}; fp32 matmul peak ({size}^3): {peak:.0f} GFLOP/s')

  x, dy_f, dy_h = normal(n, h), normal(n, f), normal(n, h)
  w1, w2 = normal(h, f), normal(f, h)
  contract = lambda a, b, dims: jax.lax.dot_general(a, b, (dims, ((), ())))
  cases = {  # name: (fn, args); every case is 2 n h f FLOPs
      f'forward  x[{n},{h}] @ W1[{h},{f}]': (lambda a, b: a @ b, (x, w1)),
      f'forward  h[{n},{f}] @ W2[{f},{h}]': (lambda a, b: a @ b, (dy_f, w2)),
      'backward dx = dy @ W1^T': (lambda a, b: contract(a, b, ((1,), (1,))), (dy_f, w1)),
      'backward dW1 = x^T @ dy': (lambda a, b: contract(a, b, ((0,), (0,))), (x, dy_f)),
      'backward dW2 = h^T @ dy': (lambda a, b: contract(a, b, ((0,), (0,))), (dy_f, dy_h)),
  }
  for name, (fn, args) in cases.items():
    rate = 2 * n * h * f / seconds(jax.jit(fn), *args) / 1e9
    print(f'{name:36s} {rate:5.0f} GFLOP/s ({100 * rate / peak:.0f}% of peak)')

  params = [(normal(h, f), normal(f, h)) for _ in range(c.model.num_layers)]

  def stack(params, x):
    for a, b in params:
      x = x + jax.nn.relu(x @ a) @ b
    return jnp.sum(jnp.square(x))

  flops = c.model.num_layers * 2 * (2 * n * h * f)
  for name, fn, mult in (('forward', stack, 1), ('forward+backward', jax.grad(stack), 3)):
    rate = mult * flops / seconds(jax.jit(fn), params, x) / 1e9
    print(f'{c.model.num_layers}-block FFN stack, {name:17s} {rate:5.0f} GFLOP/s '
          f'({100 * rate / peak:.0f}% of peak)')


if __name__ == '__main__':
  app.run(main)
