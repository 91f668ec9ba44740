r"""Demo: a tiny ELECTRA pre-trained on the embedded offline corpus, in minutes on 2 CPU cores.

  python -m electra_jax.main --config=configs/demo.py --workdir=/tmp/electra_demo

With no corpus given it writes English prose that every Python installation carries (the pydoc
topics and the standard library's docstrings, ~2 MB), trains a 4096-piece SentencePiece vocab, builds
the shards, then pre-trains. Give your own text with --config.data.corpus=PATH.
Expected (measured, see README): discriminator AUC well above chance (0.5) on held-out data.
"""
from electra_jax import defaults


def get_config():
  c = defaults.get_default_config()
  c.batch_size = 32
  c.max_seq_length = 128
  c.num_train_steps = 600
  c.data.num_shards = 4
  c.data.eval_fraction = 0.03
  c.model.vocab_size = 4096
  c.model.embedding_size = 128
  c.model.hidden_size = 128
  c.model.num_layers = 4
  c.model.num_heads = 2
  c.model.intermediate_size = 512
  c.model.generator_fraction = 0.25
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 60
  c.log_every_steps = 50
  c.eval_every_steps = 200
  c.eval_steps = 20
  c.checkpoint_every_steps = 200
  return c
