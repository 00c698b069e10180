#!/usr/bin/env bash
# One sama_jax trainer per node (default) or per GPU (--per-gpu) under SLURM; srun starts one
# copy of this script per task (launch/gpu_slurm.sbatch does):
#
#   srun --ntasks-per-node=1 launch/gpu_multinode.sh --config configs/stage1_wan1_3b.py \
#       --workdir /shared/runs/stage1 [--init_from DIR] [--config.a.b=value ...]
#   srun --ntasks-per-node=8 launch/gpu_multinode.sh --per-gpu --config ... --workdir ...
#   launch/gpu_multinode.sh --dry-run ...   # print the derived environment and command only
#
# From SLURM's variables it derives the JAX coordinator (first host of SLURM_JOB_NODELIST,
# port SAMA_COORDINATOR_PORT or 12355; SAMA_COORDINATOR=host[:port] overrides), the process
# count and this process's id, and passes them as --config.run.* flags. Unless you give a
# --config.mesh.dcn_* flag, the mesh gets dcn_data = number of nodes: data parallelism across
# nodes, the other mesh degrees (fsdp, context, tensor) within a node over NVLink.
set -euo pipefail

die() {
  echo "gpu_multinode.sh: $*" >&2
  exit 2
}

require() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || die "$name is not set; run this script through srun inside a SLURM job" \
      "(see launch/gpu_slurm.sbatch), or export $name by hand"
  done
}

# First host of a SLURM nodelist without scontrol: "gpu[07-08,10]" -> gpu07, "a01,a02" -> a01.
# Handles one bracket group in the first entry, which covers the usual "prefix[ranges]".
first_host_of() {
  local list=$1 pattern='^([^],[]*)\[([^],-]*)'
  if [[ $list =~ $pattern ]]; then
    echo "${BASH_REMATCH[1]}${BASH_REMATCH[2]}"
  else
    echo "${list%%,*}"
  fi
}

per_gpu=0
dry_run=0
args=()
for arg in "$@"; do
  case "$arg" in
    --per-gpu) per_gpu=1 ;;
    --dry-run) dry_run=1 ;;
    *) args+=("$arg") ;;
  esac
done

require SLURM_JOB_NODELIST SLURM_NNODES SLURM_PROCID
if ((per_gpu)); then
  require SLURM_NTASKS SLURM_LOCALID SLURM_NODEID
  num_processes=$SLURM_NTASKS
else
  num_processes=$SLURM_NNODES
  # One process must drive all of a node's GPUs; a second task per node would fight over them.
  if [[ -n "${SLURM_NTASKS:-}" && "$SLURM_NTASKS" != "$SLURM_NNODES" ]]; then
    die "SLURM_NTASKS=$SLURM_NTASKS but SLURM_NNODES=$SLURM_NNODES: one process per node needs" \
      "--ntasks-per-node=1 (or pass --per-gpu with --ntasks-per-node=<GPUs per node>)"
  fi
fi
process_id=$SLURM_PROCID
# The node index groups devices for the dcn mesh axes (per node it equals the process id).
node_id=${SLURM_NODEID:-$SLURM_PROCID}

if [[ -n "${SAMA_COORDINATOR:-}" ]]; then
  coordinator=$SAMA_COORDINATOR
elif command -v scontrol >/dev/null 2>&1; then
  hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST")
  coordinator=${hosts%%$'\n'*}
else
  coordinator=$(first_host_of "$SLURM_JOB_NODELIST")
fi
[[ -n "$coordinator" ]] || die "no coordinator host found in SLURM_JOB_NODELIST='$SLURM_JOB_NODELIST'"
[[ "$coordinator" == *:* ]] || coordinator="$coordinator:${SAMA_COORDINATOR_PORT:-12355}"

# NCCL / XLA defaults; a value already in the environment wins (export it before srun).
# NCCL_DEBUG=WARN: NCCL stays quiet unless something goes wrong (INFO to debug topology).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# NCCL_IB_DISABLE is left alone: InfiniBand / RoCE is what multi-node all-reduces should use.
# NCCL_SOCKET_IFNAME is passed through when set: clusters with several NICs need it to pick
# the bootstrap interface (e.g. export NCCL_SOCKET_IFNAME=eth0 or =^lo,docker).
# JAX preallocates this fraction of each GPU; 0.9 leaves room for NCCL and cuDNN workspaces.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# The latency-hiding scheduler overlaps FSDP all-gathers / reduce-scatters with compute.
if [[ "${XLA_FLAGS:-}" != *xla_gpu_enable_latency_hiding_scheduler* ]]; then
  export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_latency_hiding_scheduler=true"
fi
# Devices of one node share a partition index (the devices' slice_index), so the mesh's dcn_*
# axes span nodes in both modes. JAX's default groups by host boot id, which agrees; this makes
# it explicit. jax.distributed reads it; every process must set it, and all do here.
export JAX_PARTITION_INDEX=$node_id
# Under srun, jax.distributed.initialize detects SLURM and, unless told otherwise, keeps only
# the GPU numbered SLURM_LOCALID: a one-process-per-node run would use one GPU of eight, and a
# per-GPU run with CUDA_VISIBLE_DEVICES narrowed would ask for a GPU that is not there.
# JAX_LOCAL_DEVICE_IDS names the GPUs this process drives (ordinals among the visible ones).
if ((per_gpu)); then
  # Each process owns one GPU. This assumes SLURM shows every task all GPUs of the node
  # (--gpus-per-node); with per-task GPU binding SLURM has already narrowed the list.
  export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID
  export JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS:-0}
elif [[ -z "${JAX_LOCAL_DEVICE_IDS:-}" ]]; then
  if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
    IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
    gpus=${#visible[@]}
  elif [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    gpus=$SLURM_GPUS_ON_NODE
  elif command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L | grep -c '^GPU')
  else
    die "cannot tell how many GPUs this node has: set CUDA_VISIBLE_DEVICES, SLURM_GPUS_ON_NODE" \
      "or JAX_LOCAL_DEVICE_IDS (e.g. 0,1,2,3,4,5,6,7)"
  fi
  ((gpus > 0)) || die "this node shows no GPUs (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES:-}')"
  ids=0
  for ((i = 1; i < gpus; i++)); do ids+=",$i"; done
  export JAX_LOCAL_DEVICE_IDS=$ids
fi

# The user's flags come first: ml_collections reads --config.* overrides only after --config,
# and the derived --config.run.* flags, given last, win over any the user passed.
command=("${PYTHON:-python}" -m sama_jax.train "${args[@]+"${args[@]}"}"
  --config.run.distributed=True
  "--config.run.coordinator_address=$coordinator"
  "--config.run.num_processes=$num_processes"
  "--config.run.process_id=$process_id")
dcn_given=0
for arg in "${args[@]+"${args[@]}"}"; do
  if [[ "$arg" == --config.mesh.dcn_* ]]; then dcn_given=1; fi
done
((dcn_given)) || command+=("--config.mesh.dcn_data=$SLURM_NNODES")

if ((dry_run)); then
  echo "# derived environment"
  for name in NCCL_DEBUG NCCL_IB_DISABLE NCCL_SOCKET_IFNAME XLA_PYTHON_CLIENT_MEM_FRACTION XLA_FLAGS \
    JAX_PARTITION_INDEX JAX_LOCAL_DEVICE_IDS CUDA_VISIBLE_DEVICES; do
    if [[ -n "${!name+x}" ]]; then echo "$name=${!name}"; fi
  done
  echo "# command"
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
exec "${command[@]}"
