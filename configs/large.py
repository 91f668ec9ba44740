r"""ELECTRA-Large: the paper's Table 6 hyperparameters (335M discriminator, 400K steps of 2048 x 512).

  python -m electra_jax.main --config=configs/large.py --workdir=DIR \
      --config.data.corpus='/path/to/text/*.txt' --config.data.vocab=/path/to/vocab.txt

The released Large model trained 1.75M steps (--config.num_train_steps=1750000). Expected (paper):
GLUE dev 88.6 (released model, see reference). Needs a TPU pod; not measured here.
"""
from electra_jax import defaults


def get_config():
  c = defaults.get_default_config()
  c.batch_size = 2048
  c.max_seq_length = 512
  c.num_train_steps = 400_000
  c.model.embedding_size = 1024
  c.model.hidden_size = 1024
  c.model.num_layers = 24
  c.model.num_heads = 16
  c.model.intermediate_size = 4096
  c.model.generator_fraction = 0.25
  c.objective.mask_prob = 0.25
  c.optim.learning_rate = 2e-4
  return c
