"""The multi-host launchers (launch/): TPU VM commands, the SLURM wrapper, and that what they
pass to the trainer is accepted by its flags. Nothing here reaches gcloud or SLURM: the TPU
launcher is run with --dry-run and subprocess forbidden, the SLURM wrapper under a fake
SLURM environment with --dry-run."""

import importlib.util
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import types

import pytest
from absl import flags
from ml_collections import config_flags

from conftest import REPO

LAUNCH = os.path.join(REPO, "launch")
TPU_VM = os.path.join(LAUNCH, "tpu_vm.py")
GPU_SH = os.path.join(LAUNCH, "gpu_multinode.sh")
SBATCH = os.path.join(LAUNCH, "gpu_slurm.sbatch")
TINY_STAGE1 = os.path.join(REPO, "configs", "stage1_tiny.py")


def load_tpu_vm():
  spec = importlib.util.spec_from_file_location("tpu_vm", TPU_VM)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def tpu_vm(monkeypatch):
  """The module, with every way of starting a process made to fail the test."""
  module = load_tpu_vm()

  def forbidden(*args, **kwargs):
    raise AssertionError(f"a dry run executed {args[0] if args else kwargs}")

  # The module's own view of subprocess only: the tests themselves still run processes.
  monkeypatch.setattr(module, "subprocess", types.SimpleNamespace(
      **{name: forbidden for name in ("run", "Popen", "call", "check_call", "check_output")}))
  return module


def dry_run(tpu_vm, capsys, *argv) -> list[list[str]]:
  """Runs `tpu_vm.py ARGV --dry-run`; returns the printed commands as argv lists."""
  assert tpu_vm.main([*argv, "--dry-run"]) == 0
  lines = capsys.readouterr().out.splitlines()
  return [shlex.split(line) for line in lines if line and not line.startswith("#")]


def remote_command(argv: list[str]) -> str:
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return command


def trainer_config(argv: list[str], monkeypatch):
  """Parses a trainer command line (after `-m sama_jax.train`) with the trainer's own flag
  definitions (config file + locked --config.* overrides), on the tiny stage-1 config."""
  args = argv[argv.index("sama_jax.train") + 1:]
  args = [f"--config={TINY_STAGE1}" if a.startswith("--config=") else a for a in args]
  if "--config" in args:
    args[args.index("--config") + 1] = TINY_STAGE1
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  flags.DEFINE_string("init_from", None, "", flag_values=values)
  monkeypatch.setattr(sys, "argv", ["train", *args])  # config_flags reads overrides from sys.argv
  values(["train", *args])
  return values.config


# ---------------------------------------------------------------------------------------------
# TPU VMs.


def test_tpu_create_describes_first_then_creates(tpu_vm, capsys):
  describe, create = dry_run(tpu_vm, capsys, "create", "--name", "sama", "--zone", "us-east5-a",
                             "--accelerator-type", "v5p-64", "--version", "v2-alpha-tpuv5", "--spot")
  assert describe[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "sama"]
  assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sama"]
  assert {"--accelerator-type=v5p-64", "--version=v2-alpha-tpuv5", "--spot", "--zone=us-east5-a"} <= set(create)


def test_tpu_setup_copies_git_archive_and_installs_on_all_workers(tpu_vm, capsys):
  archive, scp, ssh = dry_run(tpu_vm, capsys, "setup", "--name", "sama", "--zone", "z", "--project", "p")
  assert archive[:2] == ["git", "archive"] and archive[-1] == "HEAD"
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in ssh
  assert "--project=p" in ssh
  install = remote_command(ssh)
  assert "tar -xzf sama_jax.tar.gz" in install
  assert "pip install -q -r requirements.txt -e ." in install  # the README's line


def test_tpu_run_passes_config_workdir_overrides_and_distributed(tpu_vm, capsys):
  run, kill = dry_run(tpu_vm, capsys, "run", "--name", "sama", "--zone", "z", "--config",
                      "configs/stage1_wan14b.py", "--workdir", "gs://b/stage1", "--init_from", "gs://b/init",
                      "--config.mesh.fsdp=8", "--config.train.learning_rate=1e-5")
  assert run[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "sama"] and "--worker=all" in run
  script = remote_command(run)
  for piece in ("python -m sama_jax.train", "--config=configs/stage1_wan14b.py", "--workdir=gs://b/stage1",
                "--init_from=gs://b/init", "--config.run.distributed=True", "--config.mesh.fsdp=8",
                "--config.train.learning_rate=1e-5"):
    assert piece in script
  assert "dcn_data" not in script  # one slice: no data-center-network axis
  assert "--worker=all" in kill and "kill -TERM" in remote_command(kill)


def test_tpu_multislice_uses_queued_resources_and_dcn_data(tpu_vm, capsys):
  common = ("--name", "sama", "--zone", "z", "--num-slices", "2")
  _, create = dry_run(tpu_vm, capsys, "create", *common, "--accelerator-type", "v6e-256", "--version", "v2")
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert {"--node-count=2", "--node-prefix=sama", "--runtime-version=v2"} <= set(create)
  *runs, kill = dry_run(tpu_vm, capsys, "run", *common, "--config", "c.py", "--workdir", "gs://b/w")
  assert [r[5] for r in runs] == ["sama-0", "sama-1"]
  for i, run in enumerate(runs):
    assert "--config.mesh.dcn_data=2" in remote_command(run) and f"[s{i}/w$W]" in remote_command(run)
  assert kill[:5] == ["gcloud", "compute", "tpus", "queued-resources", "ssh"]
  assert {"--node=all", "--worker=all"} <= set(kill)
  (delete,) = dry_run(tpu_vm, capsys, "delete", *common)
  assert delete[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "sama"]


def test_tpu_multislice_keeps_the_users_dcn_override(tpu_vm, capsys):
  run, *_ = dry_run(tpu_vm, capsys, "run", "--name", "s", "--zone", "z", "--num-slices", "4",
                    "--config", "c.py", "--workdir", "gs://b/w", "--config.mesh.dcn_fsdp=4")
  script = remote_command(run)
  assert "--config.mesh.dcn_fsdp=4" in script and "dcn_data" not in script


def test_tpu_stop_and_delete(tpu_vm, capsys):
  kill, stop_vm = dry_run(tpu_vm, capsys, "stop", "--name", "sama", "--zone", "z", "--vm")
  assert "--worker=all" in kill and "kill -TERM" in remote_command(kill)
  assert stop_vm[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "stop", "sama"]
  (delete,) = dry_run(tpu_vm, capsys, "delete", "--name", "sama", "--zone", "z")
  assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "sama"] and "--quiet" in delete


def test_tpu_rejects_flags_it_would_not_pass_on(tpu_vm):
  with pytest.raises(SystemExit):
    tpu_vm.main(["run", "--name", "s", "--zone", "z", "--config", "c", "--workdir", "w", "--bogus", "--dry-run"])
  with pytest.raises(SystemExit):
    tpu_vm.main(["setup", "--name", "s", "--zone", "z", "--config.mesh.fsdp=2", "--dry-run"])


def test_tpu_cli_dry_run_needs_no_gcloud(tmp_path):
  # PATH holds no gcloud (nor git): a dry run that tried to execute anything would fail.
  env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
  for argv in (["create", "--accelerator-type", "v5p-8", "--version", "v"], ["setup"],
               ["run", "--config", "c.py", "--workdir", "gs://w"], ["stop"], ["delete"]):
    out = subprocess.run([sys.executable, TPU_VM, *argv, "--name", "n", "--zone", "z", "--dry-run"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "gcloud compute tpus tpu-vm" in out.stdout


def fake_host(tmp_path, python_exit: int) -> dict:
  """A stand-in TPU host: the project folder with a venv, `curl` answering worker number 3,
  and a `python` that prints its arguments and exits with `python_exit`."""
  project, bin_dir = tmp_path / "sama_jax", tmp_path / "bin"
  (project / ".venv" / "bin").mkdir(parents=True)
  (project / ".venv" / "bin" / "activate").write_text("")
  bin_dir.mkdir()
  for name, body in (("curl", "echo 3"), ("python", f'echo "args: $*"; echo "to stderr" >&2; exit {python_exit}')):
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / name).chmod(0o755)
  return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}


def test_tpu_remote_script_prefixes_worker_records_pid_and_keeps_exit_status(tpu_vm, capsys, tmp_path):
  pid_file = tmp_path / "train.pid"
  run, _ = dry_run(tpu_vm, capsys, "run", "--name", "n", "--zone", "z", "--config", "c.py", "--workdir", "w",
                   "--pid-file", str(pid_file), "--config.train.seed=3")
  out = subprocess.run(["bash", "-c", remote_command(run)], capture_output=True, text=True, cwd=tmp_path,
                       env=fake_host(tmp_path, python_exit=7))
  lines = out.stdout.splitlines()
  assert out.returncode == 7  # the trainer's status survives the prefixing pipe
  assert all(line.startswith("[w3] ") for line in lines) and "[w3] to stderr" in lines
  assert "--config.run.distributed=True --config.train.seed=3" in lines[0]
  assert int(pid_file.read_text()) > 0
  assert tpu_vm.log_name(lines[0]) == "worker-w3" and tpu_vm.log_name("[s1/w12] x") == "worker-s1-w12"
  assert tpu_vm.log_name("ERROR: (gcloud) ssh failed") == "gcloud"


def test_tpu_stop_command_sigterms_the_recorded_pid(tpu_vm, capsys, tmp_path):
  pid_file = tmp_path / "train.pid"
  (kill,) = dry_run(tpu_vm, capsys, "stop", "--name", "n", "--zone", "z", "--pid-file", str(pid_file))
  subprocess.run(["bash", "-c", remote_command(kill)], check=True)  # no pid file yet: a no-op
  trainer = subprocess.Popen(["sleep", "60"])
  try:
    pid_file.write_text(str(trainer.pid))
    subprocess.run(["bash", "-c", remote_command(kill)], check=True)
    assert trainer.wait(timeout=10) == -signal.SIGTERM
  finally:
    if trainer.poll() is None:
      trainer.kill()


def test_tpu_run_streams_logs_per_worker_and_stops_cleanly_on_ctrl_c(monkeypatch, tmp_path, capsys):
  """`run` without --dry-run, with gcloud replaced by local shells: the 'hosts' print until the
  stop command (here: a marker file) arrives, and their last words still reach the logs."""
  module = load_tpu_vm()
  marker, log_dir = tmp_path / "stop", tmp_path / "logs"
  host = ('echo "[w{0}] step 1"; while [ ! -f {1} ]; do sleep 0.05; done; echo "[w{0}] saved"; '
          'echo "Connection closed"')
  monkeypatch.setattr(module, "run_commands", lambda opts, overrides: [
      ["bash", "-c", host.format(i, shlex.quote(str(marker)))] for i in range(2)])
  monkeypatch.setattr(module, "kill_commands", lambda opts: [["touch", str(marker)]])
  # The user's Ctrl-C arrives while `run` waits on the first host. Raised from that wait,
  # not sent by a timer: a signal timed against a loaded machine could land before `run`
  # waits, or not interrupt the wait at all (a pytest-xdist run once hung here for 25 minutes).
  real_stream = module.stream

  def stream_then_ctrl_c(commands, log_dir):
    started = real_stream(commands, log_dir)
    proc, real_wait, pressed = started[0][0], started[0][0].wait, []

    def wait(*args, **kwargs):
      if not pressed:
        pressed.append(True)
        raise KeyboardInterrupt
      return real_wait(*args, **kwargs)

    proc.wait = wait
    return started

  monkeypatch.setattr(module, "stream", stream_then_ctrl_c)
  opts, _ = module.parse(["run", "--name", "n", "--zone", "z", "--config", "c", "--workdir", "w",
                          "--log-dir", str(log_dir), "--stop-timeout", "20"])
  assert module.run(opts, []) == 130
  for i in range(2):
    assert (log_dir / f"worker-w{i}.log").read_text() == f"[w{i}] step 1\n[w{i}] saved\n"
  assert (log_dir / "gcloud.log").read_text() == "Connection closed\n" * 2
  assert len((log_dir / "all.log").read_text().splitlines()) == 6
  assert "[w1] saved" in capsys.readouterr().out


def test_tpu_trainer_flags_parse_with_the_trainers_config_flags(tpu_vm, capsys, monkeypatch):
  run, *_ = dry_run(tpu_vm, capsys, "run", "--name", "s", "--zone", "z", "--num-slices", "2",
                    "--config", "configs/stage1_wan14b.py", "--workdir", "gs://b/w", "--config.mesh.fsdp=4")
  command = shlex.split(remote_command(run).split("{ ", 1)[1].split(" 2>&1", 1)[0])
  config = trainer_config(command, monkeypatch)
  assert config.run.distributed is True
  assert (config.mesh.dcn_data, config.mesh.fsdp) == (2, 4)


# ---------------------------------------------------------------------------------------------
# SLURM GPU clusters.


def slurm(tmp_path, *args, scontrol: bool = True, **env) -> subprocess.CompletedProcess:
  """Runs gpu_multinode.sh under a fake SLURM environment. The fake scontrol records how it
  was called and expands the nodelist the way SLURM would."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  if scontrol:
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$*" > {tmp_path}/scontrol.args\n'
                                      'printf "gpu07\\ngpu08\\n"\n')
    (bin_dir / "scontrol").chmod(0o755)
  # Nothing but the fake scontrol on PATH: the script must get by with bash builtins.
  base = {"PATH": str(bin_dir), "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NNODES": "2",
          "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_GPUS_ON_NODE": "8"}
  full = {k: v for k, v in {**base, **env}.items() if v is not None}
  return subprocess.run(["/bin/bash", GPU_SH, *args], capture_output=True, text=True, env=full)


def derived(out: subprocess.CompletedProcess) -> tuple[dict, list[str]]:
  """(environment, command argv) printed by --dry-run."""
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  cut = lines.index("# command")
  env = dict(line.split("=", 1) for line in lines[1:cut])
  return env, shlex.split(lines[cut + 1])


def test_gpu_one_process_per_node_derives_coordinator_count_and_id(tmp_path):
  env, command = derived(slurm(tmp_path, "--dry-run", "--config", "configs/stage1_wan1_3b.py", "--workdir", "/w"))
  assert (tmp_path / "scontrol.args").read_text().strip() == "show hostnames gpu[07-08]"
  assert command[:3] == ["python", "-m", "sama_jax.train"]
  for flag in ("--config.run.distributed=True", "--config.run.coordinator_address=gpu07:12355",
               "--config.run.num_processes=2", "--config.run.process_id=1", "--config.mesh.dcn_data=2"):
    assert flag in command
  assert command[3:7] == ["--config", "configs/stage1_wan1_3b.py", "--workdir", "/w"]
  assert "CUDA_VISIBLE_DEVICES" not in env
  assert env["NCCL_DEBUG"] == "WARN" and "NCCL_IB_DISABLE" not in env
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in env["XLA_FLAGS"]
  assert env["JAX_PARTITION_INDEX"] == "1"
  # JAX's SLURM detection would otherwise keep only GPU SLURM_LOCALID (= 0) of the eight.
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"


def test_gpu_per_node_drives_exactly_the_visible_gpus(tmp_path):
  env, _ = derived(slurm(tmp_path, "--dry-run", CUDA_VISIBLE_DEVICES="4,5", SLURM_GPUS_ON_NODE=None))
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1"  # ordinals among the visible GPUs
  out = slurm(tmp_path, "--dry-run", SLURM_GPUS_ON_NODE=None)  # no way to count them
  assert out.returncode != 0 and "JAX_LOCAL_DEVICE_IDS" in out.stderr


def test_gpu_one_process_per_gpu(tmp_path):
  env, command = derived(slurm(tmp_path, "--per-gpu", "--dry-run", "--config", "c.py", SLURM_NTASKS="16",
                               SLURM_PROCID="9", SLURM_LOCALID="1", SLURM_NODEID="1"))
  assert "--config.run.num_processes=16" in command and "--config.run.process_id=9" in command
  assert env["CUDA_VISIBLE_DEVICES"] == "1"
  assert env["JAX_LOCAL_DEVICE_IDS"] == "0"  # the one GPU left visible, not GPU 1 of one
  assert env["JAX_PARTITION_INDEX"] == "1"  # devices grouped by node for dcn_data=2
  assert "--config.mesh.dcn_data=2" in command


def test_gpu_coordinator_and_nccl_overrides_pass_through(tmp_path):
  env, command = derived(slurm(tmp_path, "--dry-run", SAMA_COORDINATOR="head", SAMA_COORDINATOR_PORT="999",
                               NCCL_SOCKET_IFNAME="eth0", NCCL_DEBUG="INFO", XLA_FLAGS="--xla_foo=1"))
  assert "--config.run.coordinator_address=head:999" in command
  assert (env["NCCL_SOCKET_IFNAME"], env["NCCL_DEBUG"]) == ("eth0", "INFO")
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_gpu_enable_latency_hiding_scheduler=true"


@pytest.mark.parametrize("nodelist, first", [("gpu[07-08]", "gpu07"), ("node[3,5-6]", "node3"),
                                             ("a01,a02", "a01"), ("solo", "solo"), ("a1,b[1-2]", "a1")])
def test_gpu_nodelist_parser_without_scontrol(tmp_path, nodelist, first):
  _, command = derived(slurm(tmp_path, "--dry-run", scontrol=False, SLURM_JOB_NODELIST=nodelist))
  assert f"--config.run.coordinator_address={first}:12355" in command


def test_gpu_users_dcn_override_replaces_the_default(tmp_path):
  _, command = derived(slurm(tmp_path, "--dry-run", "--config", "c.py", "--config.mesh.dcn_fsdp=2"))
  assert "--config.mesh.dcn_fsdp=2" in command and not any("dcn_data" in a for a in command)


@pytest.mark.parametrize("missing", ["SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_PROCID"])
def test_gpu_missing_slurm_variable_is_a_clear_error(tmp_path, missing):
  out = slurm(tmp_path, "--dry-run", **{missing: None})
  assert out.returncode != 0 and out.stdout == ""
  assert f"{missing} is not set" in out.stderr and "srun" in out.stderr


def test_gpu_per_gpu_needs_ntasks_and_per_node_needs_one_task_per_node(tmp_path):
  out = slurm(tmp_path, "--per-gpu", "--dry-run")
  assert out.returncode != 0 and "SLURM_NTASKS is not set" in out.stderr
  out = slurm(tmp_path, "--dry-run", SLURM_NTASKS="16")
  assert out.returncode != 0 and "--ntasks-per-node=1" in out.stderr


def test_gpu_trainer_flags_parse_with_the_trainers_config_flags(tmp_path, monkeypatch):
  _, command = derived(slurm(tmp_path, "--dry-run", "--config", "configs/stage1_wan1_3b.py", "--workdir", "/w",
                             "--config.mesh.fsdp=-1"))
  config = trainer_config(command, monkeypatch)
  assert config.run.distributed is True
  assert (config.run.coordinator_address, config.run.num_processes, config.run.process_id) == ("gpu07:12355", 2, 1)
  assert (config.mesh.dcn_data, config.mesh.fsdp) == (2, -1)


# Stands in for `python -m sama_jax.train`: parses the flags as the trainer does, joins the
# distributed job through sama_jax.train.loop.initialize_distributed, builds the mesh.
ENTRY = """import sys
assert sys.argv[1:3] == ["-m", "sama_jax.train"], sys.argv
from absl import flags
from ml_collections import config_flags
values = flags.FlagValues()
config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
flags.DEFINE_string("workdir", None, "", flag_values=values)
sys.argv = ["train", *sys.argv[3:]]
values(sys.argv)
import jax
from sama_jax.parallel.mesh import make_mesh
from sama_jax.train.loop import initialize_distributed
initialize_distributed(values.config.run)
mesh = make_mesh(values.config.mesh)
print(f"process {jax.process_index()} of {jax.process_count()}; mesh {dict(mesh.shape)}", flush=True)
"""


def test_gpu_two_processes_join_through_the_derived_flags(tmp_path):
  """Two copies of the wrapper (two 'nodes' on this machine, CPU + gloo) start a stand-in
  trainer that really calls jax.distributed.initialize with the derived --config.run.*
  values: both must join one job of two processes."""
  (tmp_path / "entry.py").write_text(ENTRY)
  (tmp_path / "python").write_text(f'#!/bin/bash\nexec {sys.executable} {tmp_path}/entry.py "$@"\n')
  (tmp_path / "python").chmod(0o755)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": str(tmp_path / "python"),
         "JAX_PLATFORMS": "cpu", "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "2",
         "SLURM_GPUS_ON_NODE": "1", "SAMA_COORDINATOR_PORT": str(port)}
  # Fake CPU devices carry no slice index, so the dcn axis is turned off (a user's dcn flag).
  args = ["--config", TINY_STAGE1, "--workdir", str(tmp_path), "--config.run.cpu_collectives=gloo",
          "--config.mesh.dcn_data=1"]
  procs = [subprocess.Popen(["/bin/bash", GPU_SH, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**env, "SLURM_PROCID": str(i), "SLURM_NODEID": str(i)})
           for i in range(2)]
  try:
    outs = [proc.communicate(timeout=120)[0] for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for i, out in enumerate(outs):
    assert f"process {i} of 2; mesh {{'data': 2, 'fsdp': 1, 'context': 1, 'tensor': 1}}" in out, out[-2000:]


def test_launchers_only_set_run_fields_that_exist(tpu_vm, capsys, tmp_path):
  from sama_jax.train.config import run_config
  run, _ = dry_run(tpu_vm, capsys, "run", "--name", "s", "--zone", "z", "--config", "c", "--workdir", "w")
  _, gpu = derived(slurm(tmp_path, "--dry-run"))
  used = {a.split("=")[0].removeprefix("--config.run.") for a in [*shlex.split(remote_command(run)), *gpu]
          if a.startswith("--config.run.")}
  assert used == {"distributed", "coordinator_address", "num_processes", "process_id"}
  assert used <= set(run_config().keys())


def test_sbatch_runs_the_wrapper_through_srun_one_task_per_node():
  text = open(SBATCH).read()
  assert any(line.startswith("srun ") and "launch/gpu_multinode.sh" in line for line in text.splitlines())
  for directive in ("--nodes=", "--ntasks-per-node=1", "--gpus-per-node=8", "--exclusive", "--time=",
                    "--output="):
    assert f"#SBATCH {directive}" in text


@pytest.mark.parametrize("path", [GPU_SH, SBATCH])
def test_shell_scripts_parse(path):
  out = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
  assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", [GPU_SH, TPU_VM])
def test_launchers_are_executable(path):
  assert os.stat(path).st_mode & stat.S_IXUSR
