"""Text -> fixed-length model inputs: [CLS] A [SEP] (B [SEP]) with segment ids, padded with [PAD]."""
import numpy as np


def truncate_pair(tokens_a: list, tokens_b: list, max_tokens: int):
  """Drops tokens from the end of the longer sequence until both fit (BERT's rule), in place."""
  while len(tokens_a) + len(tokens_b) > max_tokens:
    (tokens_a if len(tokens_a) > len(tokens_b) else tokens_b).pop()


def pack(ids_a: list, ids_b: list | None, tokenizer, max_seq_length: int) -> dict:
  """One example: input_ids, input_mask, segment_ids (numpy int32 of length max_seq_length)."""
  ids_a = list(ids_a)
  ids_b = list(ids_b) if ids_b is not None else None
  if ids_b is None:
    del ids_a[max_seq_length - 2:]
    ids = [tokenizer.cls_id] + ids_a + [tokenizer.sep_id]
    segments = [0] * len(ids)
  else:
    truncate_pair(ids_a, ids_b, max_seq_length - 3)
    ids = [tokenizer.cls_id] + ids_a + [tokenizer.sep_id] + ids_b + [tokenizer.sep_id]
    segments = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
  return pad(ids, segments, tokenizer.pad_id, max_seq_length)


def pad(ids, segments, pad_id, max_seq_length) -> dict:
  n = len(ids)
  input_ids = np.full(max_seq_length, pad_id, np.int32)
  input_ids[:n] = ids
  mask = np.zeros(max_seq_length, np.int32)
  mask[:n] = 1
  segment_ids = np.zeros(max_seq_length, np.int32)
  segment_ids[:n] = segments
  return {'input_ids': input_ids, 'input_mask': mask, 'segment_ids': segment_ids}


def stack(rows: list[dict]) -> dict:
  """List of per-example dicts -> dict of stacked numpy arrays (with `weight` 1 for each)."""
  if not rows:
    return {}
  arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  arrays['weight'] = np.ones(len(rows), np.float32)
  return arrays


def num_examples(arrays: dict) -> int:
  return len(arrays['input_ids']) if arrays else 0
