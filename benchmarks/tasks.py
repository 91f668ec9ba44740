"""The learning benchmark's text and downstream tasks (learning.py calls write_text).

write_text splits the documents of benchmarks/doc_text.py by a hash of their names: 88% are the
pre-training corpus, 12% are held out and make the tasks (8% their train split, 4% dev). A
document is (area, its prose sentences). Each builder takes one split's documents and a
`random.Random`, and returns that split's examples as dicts (the custom-task JSONL rows):

  area   one sentence -> which of 8 areas it comes from: which words a sentence has decides most
         of it (a naive Bayes over words comes within a few points of pre-trained encoders)
  next   a pair -> does B directly follow A in its document (1), or is B a sentence of another
         held-out document (0; BERT's next-sentence task)
  order  one sentence -> is it as written (1), or have two adjacent words inside it been swapped
         (0; an acceptability task of CoLA's kind): both classes have the same words, so a model
         of which words a sentence has is at chance, and one of how English is put together is not
  splice one sentence -> as written (1), or the start of one sentence joined to the end of a
         sentence of another document, as many words as the first had (0; next's question inside
         one sentence): both classes have the same lengths and real sentences' words, so neither
         length nor which words alone decide it, only whether the words go together
"""
import contextlib
import hashlib
import json
import os
import random
import sys

import doc_text

HELD_OUT_PERCENT = 12  # of the documents, by hash: 0-7 task train, 8-11 task dev
# Examples per split (area: per area).
TASK_SIZES = {'train': {'area': 300, 'next': 3000, 'order': 3000, 'splice': 3000},
              'dev': {'area': 150, 'next': 1200, 'order': 1200, 'splice': 1200}}
AREAS = ('perl', 'postgres', 'python/library', 'kernel/admin-guide', 'kernel/networking',
         'kernel/driver-api', 'kernel/userspace-api', 'kernel/filesystems')


def _bucket(doc_id: str) -> int:
  return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100


def write_text(directory: str) -> dict:
  """corpus.txt (pre-training documents) and the tasks' JSONL files; reused when present (a task
  added since the text was written is built from the same held-out documents, the rest kept)."""
  info_path = os.path.join(directory, 'text.json')
  task_path = lambda task, split: os.path.join(directory, f'{task}_{split}.jsonl')
  info = None
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    if all(os.path.exists(task_path(t, s)) for s in TASK_SIZES for t in TASK_SIZES[s]):
      return info
  sources = doc_text.available_sources()
  missing = [doc_text.PACKAGES[s] for s in doc_text.PACKAGES if s not in sources]
  if not sources:
    sys.exit('error: no documentation found; apt-get install ' + ' '.join(missing))
  if missing:
    print(f'warning: not installed, left out: {" ".join(missing)}', flush=True)
  if info and info['sources'] != {s: len(files) for s, files in sources.items()}:
    sys.exit(f'error: {directory} was written from other documentation ({info["sources"]}); '
             'use a new --workdir')
  os.makedirs(directory, exist_ok=True)
  held = {'train': [], 'dev': []}
  num_docs = num_sentences = 0
  # The corpus is written only with the text's first tasks (a later task reuses it as it is).
  with (contextlib.nullcontext() if info else
        open(os.path.join(directory, 'corpus.txt.tmp'), 'w')) as corpus:
    for area, doc_id, sentences in doc_text.documents(sources):
      if not sentences:
        continue
      bucket = _bucket(doc_id)
      if bucket < HELD_OUT_PERCENT:
        held['train' if bucket < 8 else 'dev'].append((area, sentences))
      elif corpus:
        corpus.write('\n'.join(sentences) + '\n\n')
        num_docs += 1
        num_sentences += len(sentences)
  # area and next draw from one generator, order and splice from their own (added later, they
  # leave the others' examples as they were).
  rng, order_rng, splice_rng = random.Random(0), random.Random(1), random.Random(2)
  examples = {}
  for split in ('train', 'dev'):
    size = TASK_SIZES[split]
    examples['area', split] = area_examples(held[split], size['area'], rng)
    examples['next', split] = next_examples(held[split], size['next'], rng)
    seen = {' '.join(s.split()) for _, doc in held['train'] for s in doc} if split == 'dev' else ()
    examples['order', split] = order_examples(held[split], size['order'], order_rng, seen)
    examples['splice', split] = splice_examples(held[split], size['splice'], splice_rng, seen)
  info = info or {}
  for (task, split), rows in examples.items():
    if not os.path.exists(task_path(task, split)):
      with open(task_path(task, split) + '.tmp', 'w') as f:
        f.writelines(json.dumps(e) + '\n' for e in rows)
      os.replace(task_path(task, split) + '.tmp', task_path(task, split))
    info[f'{task}_{split}'] = len(rows)
  if corpus:
    os.replace(os.path.join(directory, 'corpus.txt.tmp'), os.path.join(directory, 'corpus.txt'))
    info.update({'sources': {s: len(files) for s, files in sources.items()}, 'missing': missing,
                 'packages': doc_text.package_versions(sources),
                 'pretraining_documents': num_docs, 'pretraining_sentences': num_sentences,
                 'corpus_mb': os.path.getsize(os.path.join(directory, 'corpus.txt')) / 1e6})
  with open(info_path, 'w') as f:
    json.dump(info, f, indent=2)
  return info


def area_examples(documents, per_area: int, rng: random.Random) -> list[dict]:
  rows = []
  for area in AREAS:
    pool = [s for a, doc in documents if a == area for s in doc if 6 <= len(s.split()) <= 40]
    rng.shuffle(pool)
    rows += [{'sentence': s, 'label': area} for s in pool[:per_area]]
  rng.shuffle(rows)
  return rows


def next_examples(documents, num_pairs: int, rng: random.Random) -> list[dict]:
  fits = lambda s: 4 <= len(s.split()) <= 30
  docs = [doc for _, doc in documents]
  candidates = [(d, i) for d, doc in enumerate(docs) for i in range(len(doc) - 1)
                if fits(doc[i]) and fits(doc[i + 1])]
  rng.shuffle(candidates)
  pairs = []
  for d, i in candidates[:num_pairs]:
    if rng.random() < 0.5:
      pairs.append({'sentence1': docs[d][i], 'sentence2': docs[d][i + 1], 'label': '1'})
    else:  # a sentence of another held-out document (of any area)
      other = rng.choice([e for e in range(len(docs)) if e != d])
      pool = [t for t in docs[other] if fits(t)] or docs[other]
      pairs.append({'sentence1': docs[d][i], 'sentence2': rng.choice(pool), 'label': '0'})
  return pairs


def swappable_positions(words: list[str]) -> list[int]:
  """Positions i where swapping words i and i+1 changes the sentence and keeps its first and
  last word in place (a capital at the start and the full stop at the end would give it away)."""
  return [i for i in range(1, len(words) - 2) if words[i] != words[i + 1]]


def swap_adjacent_words(sentence: str, rng: random.Random) -> str:
  words = sentence.split()
  i = rng.choice(swappable_positions(words))
  words[i], words[i + 1] = words[i + 1], words[i]
  return ' '.join(words)


def order_examples(documents, num: int, rng: random.Random, exclude=frozenset()) -> list[dict]:
  """`num` distinct sentences (6-30 words; none of `exclude`, e.g. the train split's when building
  dev), half of them with two adjacent words swapped, in random order. Each sentence appears once,
  as written or swapped, never both."""
  pool = sorted({' '.join(s.split()) for _, doc in documents for s in doc
                 if 6 <= len(s.split()) <= 30} - set(exclude))
  pool = [s for s in pool if swappable_positions(s.split())]
  rng.shuffle(pool)
  pool = pool[:num]
  rows = [{'sentence': s, 'label': '1'} for s in pool[len(pool) // 2:]]
  rows += [{'sentence': swap_adjacent_words(s, rng), 'label': '0'} for s in pool[:len(pool) // 2]]
  rng.shuffle(rows)
  return rows


def splice(first: str, second: str, rng: random.Random):
  """The start of `first` joined to the end of `second`, as many words in all as `first` has, at
  least 2 words from each (so the first and last words come from different sentences); None when
  `second` is too short for that."""
  a, b = first.split(), second.split()
  cuts = [i for i in range(2, len(a) - 1) if len(a) - i <= len(b) - 2]
  if not cuts:
    return None
  i = rng.choice(cuts)
  return ' '.join(a[:i] + b[len(b) - (len(a) - i):])


def splice_examples(documents, num: int, rng: random.Random, exclude=frozenset()) -> list[dict]:
  """`num` distinct sentences (8-30 words; none of `exclude`), half as written and half spliced
  with a sentence of another document, in random order. A sentence is used once, as written or
  as a spliced start, never both."""
  doc_of = {}
  for d, (_, doc) in enumerate(documents):
    for s in doc:
      s = ' '.join(s.split())
      if 8 <= len(s.split()) <= 30 and s not in exclude:
        doc_of.setdefault(s, d)
  pool = sorted(doc_of.items())
  rng.shuffle(pool)
  pool = pool[:num]
  rows = [{'sentence': s, 'label': '1'} for s, _ in pool[len(pool) // 2:]]
  for first, doc in pool[:len(pool) // 2]:
    for _ in range(1000):
      second, other = rng.choice(pool)
      spliced = splice(first, second, rng) if other != doc else None
      if spliced:
        break
    else:
      raise ValueError(f'no sentence of another document to splice with {first!r}')
    rows.append({'sentence': spliced, 'label': '0'})
  rng.shuffle(rows)
  return rows
