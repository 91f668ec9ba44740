"""Errors a user can fix by changing a flag, a config value or an input file."""


class UserError(Exception):
  """Bad input, told to the user as one clear line (main.py prints it and exits 1)."""


# Facts more than one entry point relies on (pre-training, building data, fine-tuning, scoring),
# each checked here once.

def check_vocab_size(vocab_path: str, tokens: int, model_vocab_size: int, settable: bool = True):
  """The vocabulary file has as many tokens as the model has embeddings. `settable`: the model's
  size is this run's model.vocab_size (False: it comes with pre-trained weights)."""
  if tokens != model_vocab_size:
    raise UserError(f'vocabulary {vocab_path} has {tokens} tokens but '
                    + (f'model.vocab_size is {model_vocab_size}; set '
                       f'--config.model.vocab_size={tokens}' if settable
                       else f'the model has {model_vocab_size}'))


def check_seq_length(max_seq_length: int, model_config, settable: bool = True):
  """Sequences fit the model's position table (`settable` as in check_vocab_size)."""
  if max_seq_length > model_config.max_position_embeddings:
    whose = 'model.' if settable else "the model's "
    raise UserError(f'max_seq_length {max_seq_length} > {whose}max_position_embeddings '
                    f'{model_config.max_position_embeddings}')


def check_divisible(name: str, value: int, parts: int, what: str):
  """`value` (config `name`) splits evenly into `parts` (`what` they are, for the message)."""
  if value % parts:
    raise UserError(f'{name} {value} is not divisible by {what}')
