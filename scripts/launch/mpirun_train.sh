#!/usr/bin/env bash
# Multi-node Tessera training with Open MPI's mpirun (docs/launch.md): one rank per GPU (or per
# CPU socket for CPU runs), ranks packed node by node so that TP groups (consecutive ranks under
# the default parallel.order tp-dp-pp) share a node.
#
#   HOSTFILE=hosts.txt RANKS_PER_NODE=8 scripts/launch/mpirun_train.sh configs/my_run.yaml \
#       --set train.device=cuda --set parallel.tp=8
#
# hosts.txt lists one node per line with its slots, e.g. "node01 slots=8". On one machine leave
# HOSTFILE unset. Under mpirun the NCCL unique id travels by MPI broadcast, so MASTER_ADDR and
# MASTER_PORT are not needed. As root, Open MPI needs --allow-run-as-root (set below when root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CONFIG="${1:?usage: mpirun_train.sh CONFIG.yaml [--set key=value]...}"
shift
RANKS_PER_NODE="${RANKS_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l | grep -v '^0$' || echo 1)}"
TESSERA="${TESSERA_BIN:-$ROOT/build/tessera}"

args=(--map-by "ppr:${RANKS_PER_NODE}:node" --bind-to none)
if [[ -n "${HOSTFILE:-}" ]]; then
  NODES="$(grep -cvE '^\s*(#|$)' "$HOSTFILE")"
  args+=(--hostfile "$HOSTFILE")
else
  NODES=1
fi
NP="${NP:-$((NODES * RANKS_PER_NODE))}"
[[ $(id -u) -eq 0 ]] && args+=(--allow-run-as-root)
# Environment the remote ranks need (mpirun forwards only what -x names).
for v in PATH LD_LIBRARY_PATH NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA TESSERA_LOG_LEVEL; do
  [[ -n "${!v:-}" ]] && args+=(-x "$v")
done
# Example for clusters with several networks: keep MPI's TCP traffic on one interface.
#   args+=(--mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0)
echo "[mpirun] $NP ranks on $NODES node(s), $RANKS_PER_NODE per node"
exec mpirun -np "$NP" "${args[@]}" "$TESSERA" train "$CONFIG" "$@"
