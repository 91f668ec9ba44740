"""launch/tpu_vm.sh and launch/gpu.sh against fake gcloud, srun, sbatch, scontrol, sleep and
python3 put first on PATH. Each fake appends its argv as one JSON list to a log, so quoting is
checked exactly. The fake gcloud runs `tpu-vm ssh --command` with bash in a fake worker's home
directory (as sshd runs it with the login shell) and `tpu-vm scp` as a copy there, so what the
worker would run reaches the fake python3 as its argv."""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM = os.path.join(ROOT, 'launch', 'tpu_vm.sh')
GPU = os.path.join(ROOT, 'launch', 'gpu.sh')
FAKES = ('gcloud', 'srun', 'sbatch', 'scontrol', 'sleep', 'python3')
ENV_SEEN = ('ELECTRA_JAX_DISTRIBUTED', 'TF_CPP_MIN_LOG_LEVEL', 'JAX_COORDINATOR_ADDRESS',
            'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID', 'CUDA_VISIBLE_DEVICES',
            'XLA_PYTHON_CLIENT_MEM_FRACTION')

_FAKE = r'''
import json, os, re, shutil, subprocess, sys, time
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
record = {'argv': [name] + args}
if name == 'python3':
  record.update(cwd=os.getcwd(), env={k: os.environ[k] for k in ENV_SEEN if k in os.environ})
with open(os.environ['FAKE_LOG'], 'a') as f:
  f.write(json.dumps(record) + '\n')
home = os.environ.get('FAKE_HOME')

def split_options(args):
  """srun/sbatch arguments -> (number of nodes, the command after the options)."""
  count, i = os.environ.get('SLURM_NNODES'), 0
  while i < len(args) and args[i].startswith('-'):
    if args[i] == '-N':
      i, count = i + 1, args[i + 1]
    elif args[i].startswith('--nodes='):
      count = args[i].split('=', 1)[1]
    elif args[i] == '--wrap':
      return int(count), ['bash', '-c', args[i + 1]]
    i += 1
  return int(count), args[i:]

if name == 'gcloud' and args[3:4] == ['describe']:  # queued resource: the next state in the list
  states = os.environ['FAKE_QUEUED_STATES'].split(',')
  count_file = os.environ['FAKE_LOG'] + '.describes'
  count = int(open(count_file).read()) if os.path.exists(count_file) else 0
  open(count_file, 'w').write(str(count + 1))
  print(states[min(count, len(states) - 1)])
elif name == 'gcloud' and args[3:4] == ['scp'] and home:
  shutil.copy(args[4], os.path.join(home, args[5].split(':', 1)[1]))
elif name == 'gcloud' and args[3:4] == ['ssh'] and home:
  command = next(a[len('--command='):] for a in args if a.startswith('--command='))
  sys.exit(subprocess.run(['bash', '-c', command], cwd=home, env=dict(os.environ, HOME=home)).returncode)
elif name == 'scontrol':  # show hostnames gpu[07-08]
  prefix, first, last = re.fullmatch(r'(\w+)\[(\d+)-(\d+)\]', args[2]).groups()
  print('\n'.join(f'{prefix}{i:0{len(first)}d}' for i in range(int(first), int(last) + 1)))
elif name == 'srun':  # one task per node, one after the other
  count, command = split_options(args)
  for rank in range(count):
    env = dict(os.environ, SLURM_NNODES=str(count), SLURM_PROCID=str(rank))
    subprocess.run(command, env=env, check=True)
elif name == 'sbatch':  # runs the --wrap script at once, as the job's batch step
  count, command = split_options(args)
  subprocess.run(command, check=True, env=dict(
      os.environ, SLURM_JOB_NODELIST=os.environ['FAKE_NODELIST'], SLURM_NNODES=str(count)))
  print('Submitted batch job 7')
elif name == 'python3' and args[:2] == ['-m', 'electra_jax.main']:
  time.sleep(float(os.environ.get('FAKE_TRAIN_SECONDS', '0')))
'''


@pytest.fixture
def fake(tmp_path):
  """Installs the fakes; returns run(script, *args, **env) -> (CompletedProcess, records)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  program = bin_dir / 'fake.py'
  program.write_text(f'#!{sys.executable}\nENV_SEEN = {ENV_SEEN!r}\n{_FAKE}')
  program.chmod(program.stat().st_mode | stat.S_IEXEC)
  for name in FAKES:
    (bin_dir / name).symlink_to(program)
  log = tmp_path / 'calls.jsonl'
  base_env = {k: v for k, v in os.environ.items()
              if not k.startswith(('SLURM_', 'JAX_', 'TPU_', 'ELECTRA_JAX_'))
              and k not in ('PROJECT', 'SPOT', 'QUEUED', 'WORKER', 'GPUS', 'NUM_NODES',
                            'NODE_RANK', 'COORDINATOR', 'PYTHON', 'REMOTE_DIR',
                            'CUDA_VISIBLE_DEVICES', 'XLA_PYTHON_CLIENT_MEM_FRACTION',
                            'TF_CPP_MIN_LOG_LEVEL')}
  base_env.update(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', FAKE_LOG=str(log),
                  NAME='electra-base', ZONE='us-central2-b', ACCELERATOR='v4-32')

  def run(*command, **env):
    done = 0 if not log.exists() else len(log.read_text().splitlines())
    result = subprocess.run(['bash', *command], env={**base_env, **env}, capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    records = [json.loads(l) for l in log.read_text().splitlines()[done:]] if log.exists() else []
    return result, records

  def wait_for(name, count):
    """The records of `name` once there are `count` (a background process logs late)."""
    deadline = time.monotonic() + 60
    while True:
      records = [json.loads(l) for l in log.read_text().splitlines()]
      found = [r for r in records if r['argv'][0] == name]
      if len(found) >= count or time.monotonic() > deadline:
        return found
      time.sleep(0.05)

  run.wait_for = wait_for
  return run


def argvs(records, name=None):
  return [r['argv'] for r in records if name is None or r['argv'][0] == name]


GCLOUD_TPU = ['gcloud', 'compute', 'tpus', 'tpu-vm']
ZONE = '--zone=us-central2-b'


# ---- launch/tpu_vm.sh

def test_create_plain_spot_and_queued(fake):
  result, records = fake(TPU_VM, 'create')
  assert result.returncode == 0, result.stderr
  assert argvs(records) == [GCLOUD_TPU + ['create', 'electra-base', '--accelerator-type=v4-32',
                                          '--version=tpu-ubuntu2204-base', ZONE]]
  _, records = fake(TPU_VM, 'create', SPOT='1', PROJECT='my-project')
  assert argvs(records) == [GCLOUD_TPU + ['create', 'electra-base', '--accelerator-type=v4-32',
                                          '--version=tpu-ubuntu2204-base', '--spot', ZONE,
                                          '--project=my-project']]
  # A queued resource: created, then polled every 30 s until ACTIVE.
  result, records = fake(TPU_VM, 'create', QUEUED='1', SPOT='1',
                         FAKE_QUEUED_STATES='WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE')
  assert result.returncode == 0, result.stderr
  describe = ['gcloud', 'compute', 'tpus', 'queued-resources', 'describe', 'electra-base', ZONE,
              '--format=value(state.state)']
  assert argvs(records) == [
      ['gcloud', 'compute', 'tpus', 'queued-resources', 'create', 'electra-base',
       '--node-id=electra-base', ZONE, '--accelerator-type=v4-32',
       '--runtime-version=tpu-ubuntu2204-base', '--spot'],
      describe, ['sleep', '30'], describe, ['sleep', '30'], describe]


def test_queued_resource_that_fails_is_an_error(fake):
  result, records = fake(TPU_VM, 'create', QUEUED='1', FAKE_QUEUED_STATES='FAILED')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == 'error: queued resource electra-base is FAILED'
  assert argvs(records)[-1][4] == 'describe'


def test_install_copies_the_checkout_and_pip_installs_the_tpu_extra(fake, tmp_path):
  home = tmp_path / 'worker'
  home.mkdir()
  result, records = fake(TPU_VM, 'install', FAKE_HOME=str(home))
  assert result.returncode == 0, result.stderr
  scp, ssh = argvs(records, 'gcloud')
  archive = scp[5]
  assert scp == GCLOUD_TPU + ['scp', archive, 'electra-base:electra_jax.tar.gz', '--worker=all',
                              ZONE]
  assert archive.endswith('.tar.gz') and not os.path.exists(archive)  # removed once sent
  assert ssh[:7] == GCLOUD_TPU + ['ssh', 'electra-base', '--worker=all'] and ssh[8:] == [ZONE]
  # What the worker ran: the checkout unpacked into ~/electra_jax, installed with the tpu extra.
  installed = [r for r in records if r['argv'][0] == 'python3']
  assert [r['argv'] for r in installed] == [
      ['python3', '-m', 'pip', 'install', '-q', '--upgrade', 'pip'],
      ['python3', '-m', 'pip', 'install', '-q', '-e', '.[tpu]'],
      ['python3', '-c', 'import jax; print(jax.process_index(), jax.local_device_count(), '
                        'jax.devices()[0].device_kind)']]
  assert {r['cwd'] for r in installed} == {str(home / 'electra_jax')}
  assert (home / 'electra_jax' / 'electra_jax' / 'train.py').exists()
  assert not (home / 'electra_jax' / '.git').exists()


TRAIN_ARGS = ['--config=configs/base.py', '--workdir=gs://my-bucket/electra base',
              "--config.data.corpus=/data/books/*.txt,/data/it's wiki.txt",
              '--config.data.vocab=gs://my-bucket/vocab.txt', '--config.mesh_shape=(1, -1, 1)',
              '--config.data.tfds_text_key="text"', '--config.optim.learning_rate=2e-4']


def _alive(pid):
  """Running, and not a zombie (an orphan killed here waits for a parent that may never reap it)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='the TPU VM side reads /proc (Linux)')
def test_train_quotes_overrides_and_a_rerun_is_idempotent(fake, tmp_path):
  home = tmp_path / 'worker'
  (home / 'electra_jax').mkdir(parents=True)
  pid_file = home / 'electra_jax' / 'train.pid'
  env = dict(FAKE_HOME=str(home), FAKE_TRAIN_SECONDS='60')
  try:
    result, records = fake(TPU_VM, 'train', *TRAIN_ARGS, **env)
    assert result.returncode == 0, result.stderr
    # Only gcloud's record: the worker's python3, started in the background, may log in time to
    # be read here too (it did under a loaded CI), and is checked below with wait_for.
    (ssh,) = argvs(records, 'gcloud')
    assert ssh[:7] == GCLOUD_TPU + ['ssh', 'electra-base', '--worker=all']
    assert ssh[7].startswith('--command=') and ssh[8:] == [ZONE]
    (started,) = fake.wait_for('python3', 1)
    # Every override reached the worker's python as the same single argument.
    assert started['argv'] == ['python3', '-m', 'electra_jax.main', *TRAIN_ARGS]
    assert started['env'] == {'ELECTRA_JAX_DISTRIBUTED': '1', 'TF_CPP_MIN_LOG_LEVEL': '2'}
    assert started['cwd'] == str(home / 'electra_jax')
    pid = int(pid_file.read_text())
    assert _alive(pid) and f'as pid {pid}' in result.stdout

    # The same command again while it runs: the same remote command, and no second process.
    result, records = fake(TPU_VM, 'train', *TRAIN_ARGS, **env)
    assert result.returncode == 0, result.stderr
    assert argvs(records) == [ssh]
    assert 'already running on' in result.stdout and f'as pid {pid}' in result.stdout

    # stop: the process is gone; the same command then starts it again, as after a preemption
    # (the framework resumes from the workdir's latest checkpoint: tests/test_train.py).
    result, records = fake(TPU_VM, 'stop', **env)
    assert result.returncode == 0, result.stderr
    assert argvs(records)[0][:7] == GCLOUD_TPU + ['ssh', 'electra-base', '--worker=all']
    assert not _alive(pid) and not pid_file.exists()
    result, records = fake(TPU_VM, 'train', *TRAIN_ARGS, **env)
    assert argvs(records, 'gcloud') == [ssh]
    assert [r['argv'] for r in fake.wait_for('python3', 2)] == [started['argv']] * 2
    assert int(pid_file.read_text()) != pid
  finally:
    if pid_file.exists():
      os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_logs_delete_ssh_and_usage(fake):
  _, records = fake(TPU_VM, 'logs')
  assert argvs(records) == [GCLOUD_TPU + ['ssh', 'electra-base', '--worker=0',
                                          '--command=tail -n 100 -F electra_jax/train.log', ZONE]]
  _, records = fake(TPU_VM, 'logs', WORKER='3', REMOTE_DIR='my dir')
  assert argvs(records) == [GCLOUD_TPU + ['ssh', 'electra-base', '--worker=3',
                                          r'--command=tail -n 100 -F my\ dir/train.log', ZONE]]
  _, records = fake(TPU_VM, 'delete')
  assert argvs(records) == [GCLOUD_TPU + ['delete', 'electra-base', '--quiet', ZONE]]
  _, records = fake(TPU_VM, 'delete', QUEUED='1', PROJECT='p')
  assert argvs(records) == [['gcloud', 'compute', 'tpus', 'queued-resources', 'delete',
                             'electra-base', ZONE, '--force', '--quiet', '--project=p']]
  _, records = fake(TPU_VM, 'ssh', 'tail -n 3 electra_jax/train.log', WORKER='0')
  assert argvs(records) == [GCLOUD_TPU + ['ssh', 'electra-base', '--worker=0',
                                          '--command=tail -n 3 electra_jax/train.log', ZONE]]
  for args in ([], ['train'], ['launch']):  # the usage, and nothing run
    result, records = fake(TPU_VM, *args)
    assert result.returncode == 2 and 'tpu_vm.sh train --config=' in result.stderr
    assert records == []


# ---- launch/gpu.sh

GPU_ARGS = ['--config=configs/base.py', '--workdir=/shared/electra base',
            "--config.data.corpus=/data/a b.txt,/data/it's.txt", '--config.mesh_shape=(1, -1, 1)']


def test_gpu_one_node(fake):
  result, records = fake(GPU, *GPU_ARGS)
  assert result.returncode == 0, result.stderr
  assert records == [{'argv': ['python3', '-m', 'electra_jax.main', *GPU_ARGS], 'cwd': ROOT,
                      'env': {'TF_CPP_MIN_LOG_LEVEL': '2',
                              'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.9'}}]
  _, records = fake(GPU, *GPU_ARGS, GPUS='0,1')
  assert records[0]['env']['CUDA_VISIBLE_DEVICES'] == '0,1'


def test_gpu_several_nodes(fake):
  _, records = fake(GPU, *GPU_ARGS, NUM_NODES='2', NODE_RANK='1', COORDINATOR='10.0.0.1:12345')
  assert records == [{'argv': ['python3', '-m', 'electra_jax.main', *GPU_ARGS], 'cwd': ROOT,
                      'env': {'ELECTRA_JAX_DISTRIBUTED': '1', 'TF_CPP_MIN_LOG_LEVEL': '2',
                              'JAX_COORDINATOR_ADDRESS': '10.0.0.1:12345',
                              'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1',
                              'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.9'}}]
  result, records = fake(GPU, *GPU_ARGS, NUM_NODES='2')
  assert result.returncode == 2 and records == []
  assert result.stderr.strip() == 'error: NUM_NODES=2 needs COORDINATOR=HOST:PORT (node 0\'s address)'
  result, records = fake(GPU, *GPU_ARGS, NUM_NODES='2', NODE_RANK='2', COORDINATOR='h:1')
  assert result.returncode == 2 and records == []
  assert result.stderr.strip() == 'error: NODE_RANK=2 is not in [0, 2)'


def _slurm_processes(records):
  return [(r['env']['JAX_PROCESS_ID'], r['env']['JAX_NUM_PROCESSES'],
           r['env']['JAX_COORDINATOR_ADDRESS'], r['argv']) for r in records
          if r['argv'][0] == 'python3']


def test_gpu_under_srun_and_sbatch(fake):
  # srun inside an allocation: the nodes come from SLURM_*, the coordinator is the first node.
  command = ['srun', '-N', '2', '--ntasks-per-node=1', GPU, *GPU_ARGS]
  result, records = fake('-c', '"$@"', 'bash', *command, SLURM_JOB_NODELIST='gpu[07-08]')
  assert result.returncode == 0, result.stderr
  argv = ['python3', '-m', 'electra_jax.main', *GPU_ARGS]
  expected = [('0', '2', 'gpu07:12345', argv), ('1', '2', 'gpu07:12345', argv)]
  assert _slurm_processes(records) == expected
  assert argvs(records, 'scontrol') == [['scontrol', 'show', 'hostnames', 'gpu[07-08]']] * 2
  # sbatch, as launch/README.md shows it.
  script = f'srun {GPU} --config=configs/base.py --workdir=/shared/electra_base'
  result, records = fake('-c', '"$@"', 'bash', 'sbatch', '--nodes=2', '--ntasks-per-node=1',
                         '--wrap', script, FAKE_NODELIST='gpu[07-08]')
  assert result.returncode == 0, result.stderr
  assert argvs(records)[0] == ['sbatch', '--nodes=2', '--ntasks-per-node=1', '--wrap', script]
  argv = ['python3', '-m', 'electra_jax.main', '--config=configs/base.py',
          '--workdir=/shared/electra_base']
  assert _slurm_processes(records) == [('0', '2', 'gpu07:12345', argv),
                                       ('1', '2', 'gpu07:12345', argv)]
