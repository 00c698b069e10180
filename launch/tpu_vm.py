"""Cloud TPU VMs for sama_jax training, driven through gcloud (stdlib only).

    python launch/tpu_vm.py create --name sama --zone us-east5-a --accelerator-type v5p-64 \
        --version v2-alpha-tpuv5
    python launch/tpu_vm.py setup --name sama --zone us-east5-a
    python launch/tpu_vm.py run --name sama --zone us-east5-a --config configs/stage1_wan14b.py \
        --workdir gs://BUCKET/stage1 --init_from gs://BUCKET/wan14b_converted --config.mesh.fsdp=-1
    python launch/tpu_vm.py stop --name sama --zone us-east5-a      # SIGTERM: checkpoint, then exit
    python launch/tpu_vm.py delete --name sama --zone us-east5-a

Every subcommand takes --dry-run: it prints each command it would run, one per line, quoted
for a POSIX shell, and runs nothing. `--num-slices N` (N > 1) asks for a Multislice queued
resource of N slices named NAME-0 ... NAME-{N-1}; the queued resource writes the MEGASCALE_*
variables into every host's `tpu-env` metadata, where JAX finds the slices, and `run` adds
`--config.mesh.dcn_data=N` (data parallel across slices) unless a `--config.mesh.dcn_*`
override is given. The commands are built by pure functions returning argv lists; `main`
only executes them. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import subprocess
import sys
import threading
import time

ARCHIVE = "sama_jax.tar.gz"  # in the remote home directory
PID_FILE = "/tmp/sama_jax_train.pid"  # default home of the remote trainer's pid, for a clean stop
# The README's install line; the TPU build of jax (libtpu) is added on top.
README_INSTALL = "pip install -q -r requirements.txt -e ."
TPU_JAX = "jax[tpu]>=0.10,<0.12"
# Every TPU VM knows its worker number from the metadata server (JAX reads the same key).
WORKER_ID = ("$(curl -s -H Metadata-Flavor:Google "
             "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"
             " || echo '?')")
PREFIX = re.compile(r"^\[((?:s\d+/)?w[^\]]*)\] ")  # "[w3] ..." or "[s1/w3] ..."


# ---------------------------------------------------------------------------------------------
# Commands (pure).


def multislice(opts) -> bool:
  return opts.num_slices > 1


def location(opts) -> list[str]:
  return [f"--zone={opts.zone}"] + ([f"--project={opts.project}"] if opts.project else [])


def tpu_vm(verb: str, *args: str, opts) -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, *location(opts)]


def queued(verb: str, *args: str, opts) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", verb, *args, *location(opts)]


def node_names(opts) -> list[str]:
  """The TPU VMs of the run: NAME, or NAME-0 ... NAME-{N-1} (the queued resource's node prefix)."""
  if not multislice(opts):
    return [opts.name]
  return [f"{opts.name}-{i}" for i in range(opts.num_slices)]


def describe_command(opts) -> list[str]:
  """Exits non-zero when the TPU (or queued resource) does not exist."""
  if multislice(opts):
    return queued("describe", opts.name, "--format=value(state.state)", opts=opts)
  return tpu_vm("describe", opts.name, "--format=value(state)", opts=opts)


def create_command(opts) -> list[str]:
  spot = ["--spot"] if opts.spot else []
  if multislice(opts):
    return queued("create", opts.name, f"--accelerator-type={opts.accelerator_type}",
                  f"--runtime-version={opts.version}", f"--node-count={opts.num_slices}",
                  f"--node-prefix={opts.name}", *spot, opts=opts)
  return tpu_vm("create", opts.name, f"--accelerator-type={opts.accelerator_type}",
                f"--version={opts.version}", *spot, opts=opts)


def on_all_workers(command: str, opts) -> list[str]:
  """`command` (one shell string) on every host of every slice, in parallel."""
  if multislice(opts):
    return queued("ssh", opts.name, "--node=all", "--worker=all", f"--command={command}", opts=opts)
  return tpu_vm("ssh", opts.name, "--worker=all", f"--command={command}", opts=opts)


def archive_command(opts) -> list[str]:
  """The committed tree at --ref as a tarball (uncommitted edits are not shipped)."""
  return ["git", "archive", "--format=tar.gz", f"--output={opts.archive}", opts.ref]


def copy_command(opts) -> list[str]:
  if multislice(opts):
    return queued("scp", opts.archive, f"{opts.name}:{ARCHIVE}", "--node=all", "--worker=all", opts=opts)
  return tpu_vm("scp", opts.archive, f"{opts.name}:{ARCHIVE}", "--worker=all", opts=opts)


def install_script(opts) -> str:
  """Unpacks the tarball over REMOTE_DIR (the venv survives re-runs) and pip-installs."""
  d = shlex.quote(opts.remote_dir)
  # TPU VM images may lack the venv module; apt has it.
  venv = "python3 -m venv .venv || { sudo apt-get -qq update && sudo apt-get -qq install -y python3-venv " \
         "&& python3 -m venv .venv; }"
  return " && ".join([
      "set -e", f"mkdir -p {d}", f"tar -xzf {ARCHIVE} -C {d}", f"cd {d}", f"{{ [ -d .venv ] || {venv}; }}",
      ". .venv/bin/activate", opts.install])


def setup_commands(opts) -> list[list[str]]:
  return [archive_command(opts), copy_command(opts), on_all_workers(install_script(opts), opts)]


def has_dcn_override(overrides: list[str]) -> bool:
  return any(o.startswith("--config.mesh.dcn_") for o in overrides)


def train_argv(opts, overrides: list[str]) -> list[str]:
  """The trainer's command line, identical on every host (JAX finds the TPU cluster itself)."""
  argv = ["python", "-m", "sama_jax.train", f"--config={opts.config}", f"--workdir={opts.workdir}"]
  if opts.init_from:
    argv.append(f"--init_from={opts.init_from}")
  argv.append("--config.run.distributed=True")
  if multislice(opts) and not has_dcn_override(overrides):
    argv.append(f"--config.mesh.dcn_data={opts.num_slices}")
  return argv + list(overrides)


def run_script(opts, overrides: list[str], slice_index: int | None) -> str:
  """Runs the trainer in the background of a pipe that prefixes each line with the worker id,
  records its pid (so `stop` can SIGTERM it), and exits with the trainer's status."""
  label = "w" if slice_index is None else f"s{slice_index}/w"
  exports = [f"export {shlex.quote(e)}" for e in ["PYTHONUNBUFFERED=1", *opts.env]]
  train = shlex.join(train_argv(opts, overrides))
  return " && ".join([
      f"cd {shlex.quote(opts.remote_dir)}", ". .venv/bin/activate", *exports, f"W={WORKER_ID}",
      "set -o pipefail",
      f"{{ {train} 2>&1 & echo $! > {shlex.quote(opts.pid_file)}; wait $!; }} | sed -u \"s|^|[{label}$W] |\""])


def run_commands(opts, overrides: list[str]) -> list[list[str]]:
  """One ssh per slice, all workers of the slice at once (gcloud tpu-vm ssh has no batch limit,
  and every host must start for the job to start)."""
  if not multislice(opts):
    return [tpu_vm("ssh", opts.name, "--worker=all", f"--command={run_script(opts, overrides, None)}",
                   opts=opts)]
  return [tpu_vm("ssh", node, "--worker=all", f"--command={run_script(opts, overrides, i)}", opts=opts)
          for i, node in enumerate(node_names(opts))]


def kill_commands(opts) -> list[list[str]]:
  """SIGTERM to the trainer on every host: it saves a checkpoint and exits (sama_jax/train/loop.py)."""
  pid = shlex.quote(opts.pid_file)
  kill = f"if [ -f {pid} ]; then kill -TERM \"$(cat {pid})\" 2>/dev/null || true; fi"
  return [on_all_workers(kill, opts)]


def delete_commands(opts) -> list[list[str]]:
  if multislice(opts):  # --force deletes the slices with the request
    return [queued("delete", opts.name, "--force", "--quiet", opts=opts)]
  return [tpu_vm("delete", opts.name, "--quiet", opts=opts)]


def stop_vm_commands(opts) -> list[list[str]]:
  return [tpu_vm("stop", node, opts=opts) for node in node_names(opts)]


def log_name(line: str) -> str:
  """The per-worker log file a streamed line belongs to ("gcloud" for gcloud's own output)."""
  m = PREFIX.match(line)
  return "worker-" + m.group(1).replace("/", "-") if m else "gcloud"


# ---------------------------------------------------------------------------------------------
# Execution.


def show(commands: list[list[str]], comment: str | None = None) -> None:
  if comment:
    print(f"# {comment}")
  for command in commands:
    print(shlex.join(command))


def check_call(command: list[str]) -> None:
  print("+", shlex.join(command), flush=True)
  subprocess.run(command, check=True)


def exists(opts) -> bool:
  return subprocess.run(describe_command(opts), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def wait_active(opts, poll_s: float = 30.0) -> None:
  """A queued resource is usable once ACTIVE; it may wait in the queue for a long time."""
  while True:
    state = subprocess.run(describe_command(opts), capture_output=True, text=True).stdout.strip()
    print(f"queued resource {opts.name}: {state or 'unknown'}", flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise SystemExit(f"queued resource {opts.name} is {state}; delete it and create again")
    time.sleep(poll_s)


def stream(commands: list[list[str]], log_dir: str) -> list[tuple[subprocess.Popen, threading.Thread]]:
  """Starts the commands, echoing their merged output and appending it to LOG_DIR/all.log and
  LOG_DIR/worker-*.log. Own sessions keep Ctrl-C away from gcloud, so logs flow during stop."""
  os.makedirs(log_dir, exist_ok=True)
  lock = threading.Lock()

  def pump(proc):
    for line in proc.stdout:
      with lock:
        sys.stdout.write(line)
        sys.stdout.flush()
        for name in ("all", log_name(line)):
          with open(os.path.join(log_dir, f"{name}.log"), "a", encoding="utf-8") as f:
            f.write(line)

  started = []
  for command in commands:
    print("+", shlex.join(command), flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    thread = threading.Thread(target=pump, args=(proc,), daemon=True)
    thread.start()
    started.append((proc, thread))
  return started


def run(opts, overrides: list[str]) -> int:
  started = stream(run_commands(opts, overrides), opts.log_dir)
  procs = [proc for proc, _ in started]
  try:
    return max(proc.wait() for proc in procs)
  except KeyboardInterrupt:
    print(f"\nCtrl-C: SIGTERM to the trainers (they checkpoint); waiting up to {opts.stop_timeout:.0f} s "
          "(Ctrl-C again to leave them)", flush=True)
    try:
      for command in kill_commands(opts):
        check_call(command)
      deadline = time.time() + opts.stop_timeout
      for proc in procs:
        proc.wait(timeout=max(1.0, deadline - time.time()))
    except (KeyboardInterrupt, subprocess.TimeoutExpired, subprocess.CalledProcessError):
      pass
    for proc in procs:
      if proc.poll() is None:
        proc.terminate()
    return 130
  finally:
    for _, thread in started:  # the last lines are still in the pipes
      thread.join(timeout=10)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
  sub = parser.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  common.add_argument("--name", required=True, help="TPU VM (or queued resource) name")
  common.add_argument("--zone", required=True)
  common.add_argument("--project", default=None, help="default: gcloud's configured project")
  common.add_argument("--num-slices", type=int, default=1, help="> 1: Multislice queued resource")
  common.add_argument("--remote-dir", default="sama_jax", help="project folder on the hosts, relative to home")
  common.add_argument("--pid-file", default=PID_FILE, help="where the hosts keep the trainer's pid")
  common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")

  create = sub.add_parser("create", parents=[common], help="create the TPU VM unless it exists", allow_abbrev=False)
  create.add_argument("--accelerator-type", required=True, help="e.g. v5p-8, v5p-64, v6e-256")
  create.add_argument("--version", required=True, help="TPU runtime, e.g. v2-alpha-tpuv5, v2-alpha-tpuv6e")
  create.add_argument("--spot", action="store_true", help="Spot capacity (preemptible)")

  setup = sub.add_parser("setup", parents=[common], help="copy the project to every host and install",
                         allow_abbrev=False)
  setup.add_argument("--ref", default="HEAD", help="git ref to ship (committed files only)")
  setup.add_argument("--archive", default=os.path.join("/tmp", ARCHIVE), help="local tarball path")
  setup.add_argument("--install", default=f"{README_INSTALL} && pip install -q '{TPU_JAX}'",
                     help="install command run in the remote project folder with the venv active")

  run_p = sub.add_parser("run", parents=[common], allow_abbrev=False,
                         help="train on every host; extra --config.* flags are passed through")
  run_p.add_argument("--config", required=True)
  run_p.add_argument("--workdir", required=True, help="shared by all hosts: a gs:// path")
  run_p.add_argument("--init_from", "--init-from", dest="init_from", default=None)
  run_p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="exported on the hosts")
  run_p.add_argument("--log-dir", default=None, help="local logs (default logs/tpu/NAME-TIME)")
  run_p.add_argument("--stop-timeout", type=float, default=300.0, help="seconds to wait after Ctrl-C")

  stop = sub.add_parser("stop", parents=[common], help="SIGTERM the trainers (checkpoint, exit)",
                        allow_abbrev=False)
  stop.add_argument("--vm", action="store_true", help="also stop the TPU VMs (they keep their disks)")
  sub.add_parser("delete", parents=[common], help="delete the TPU VM or queued resource", allow_abbrev=False)

  opts, extra = parser.parse_known_args(argv)
  bad = [a for a in extra if opts.command != "run" or not a.startswith("--config.")]
  if bad:
    parser.error(f"unrecognized arguments {bad}; only `run` passes extra flags, and only --config.* ones")
  if opts.num_slices < 1:
    parser.error(f"--num-slices={opts.num_slices}; expected >= 1")
  if opts.command == "stop" and opts.vm and opts.num_slices > 1:
    parser.error("stop --vm stops single-slice TPU VMs; a Multislice queued resource can only be deleted")
  if opts.command == "run":
    bad_env = [e for e in opts.env if "=" not in e]
    if bad_env:
      parser.error(f"--env {bad_env}; expected KEY=VALUE")
    if opts.log_dir is None:
      opts.log_dir = os.path.join("logs", "tpu", f"{opts.name}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
  return opts, extra


def main(argv: list[str] | None = None) -> int:
  opts, overrides = parse(sys.argv[1:] if argv is None else argv)
  if opts.command == "create":
    if opts.dry_run:
      show([describe_command(opts)])
      show([create_command(opts)], "only when the describe above fails (the TPU does not exist yet)")
      return 0
    if exists(opts):
      print(f"{opts.name} exists; reusing it")
    else:
      check_call(create_command(opts))
    if multislice(opts):
      wait_active(opts)
    return 0
  if opts.command == "setup":
    if opts.dry_run:
      show(setup_commands(opts))
      return 0
    for command in setup_commands(opts):
      check_call(command)
    return 0
  if opts.command == "run":
    if opts.dry_run:
      label = "s<slice>/w<worker>" if multislice(opts) else "w<worker>"
      show(run_commands(opts, overrides), f"output prefixed [{label}] and tee'd to {opts.log_dir}")
      show(kill_commands(opts), "on Ctrl-C (and by `stop`):")
      return 0
    return run(opts, overrides)
  commands = {"stop": lambda: kill_commands(opts) + (stop_vm_commands(opts) if opts.vm else []),
              "delete": lambda: delete_commands(opts)}[opts.command]()
  if opts.dry_run:
    show(commands)
    return 0
  for command in commands:
    check_call(command)
  return 0


if __name__ == "__main__":
  sys.exit(main())
