r"""ELECTRA-Base: the paper's Table 6 hyperparameters (110M discriminator, 766K steps of 256 x 512).

  python -m electra_jax.main --config=configs/base.py --workdir=DIR \
      --config.data.corpus='/path/to/text/*.txt' --config.data.vocab=/path/to/vocab.txt

Expected (paper): GLUE dev 85.1 after fine-tuning. Needs accelerators; not measured here.
"""
from electra_jax import defaults


def get_config():
  c = defaults.get_default_config()
  c.batch_size = 256
  c.max_seq_length = 512
  c.num_train_steps = 766_000
  c.model.embedding_size = 768
  c.model.hidden_size = 768
  c.model.num_heads = 12
  c.model.intermediate_size = 3072
  c.model.generator_fraction = 1 / 3
  c.optim.learning_rate = 2e-4
  return c
