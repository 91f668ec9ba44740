r"""Fine-tuning ELECTRA-Large: configs/finetune.py with the original's Large settings (lr 5e-5,
layer-wise decay 0.9); everything else (tasks, data, outputs) as there.

  python -m electra_jax.main --config=configs/finetune_large.py --config.task=mnli \
      --config.init_checkpoint=/tmp/electra_large --config.data_dir=/data/glue --workdir=/tmp/ft_l

Expected (the original's released Large, GLUE dev, reference): CoLA 69.1 SST 96.9 MRPC 90.8 STS 92.6
QQP 92.4 MNLI 90.9 QNLI 95.0 RTE 88.0; SQuAD 2.0 dev EM 88.1. Not measured here (no GPU/TPU, no data).
"""
from configs import finetune


def get_config():
  c = finetune.get_config()
  c.optim.learning_rate = 5e-5
  c.layerwise_lr_decay = 0.9
  return c
