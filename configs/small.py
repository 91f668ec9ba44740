r"""ELECTRA-Small: the paper's Table 6 hyperparameters (14M parameters, 1M steps of batch 128 x 128).

  python -m electra_jax.main --config=configs/small.py --workdir=/tmp/electra_small \
      --config.data.corpus='/path/to/text/*.txt' --config.data.vocab=/path/to/vocab.txt

Corpus: one sentence per line, blank line between documents (or 'tfds:NAME'); vocab: BERT uncased
WordPiece vocab.txt (30522), or leave it empty to train a 30522-piece SentencePiece model.
Expected (paper): GLUE dev 79.9 after fine-tuning, 4 days on one V100. Measured here: on 2 CPU cores
it runs at the tokens/s printed in its progress line (see README "Measured"), far too slow to finish;
use a GPU/TPU.
"""
from electra_jax import defaults


def get_config():
  return defaults.get_default_config()  # the defaults are ELECTRA-Small
