#!/usr/bin/env bash
# Every config in configs/ passes `tessera validate` at the world size it is meant for (its
# "# world: N" comment line; 1 without one), and the Llama 3 shapes have their published sizes.
# Usage: configs_test.sh PATH/TO/tessera CONFIGS_DIR   (run from the repository root, where the
# sample data's relative paths resolve; missing data is only a warning anyway)
set -uo pipefail
TESSERA="$1"
CONFIGS="$2"
failures=0
passes=0

# Published sizes in parameters ("The Llama 3 Herd of Models", and the model cards: 8.03B,
# 70.6B, 405.9B... given to 3-4 significant digits). 1% tolerance: the rounding is below 0.1%,
# and any wrong shape key moves the count by more (one layer of 32 in 8B is 2.7%; an ffn of
# 14336 instead of 14436 is 1.2%).
declare -A published=([llama3_8b]=8.03e9 [llama3_70b]=70.6e9 [llama3_405b]=405.9e9)

for config in "$CONFIGS"/*.yaml; do
  name="$(basename "$config" .yaml)"
  world="$(sed -n 's/^# world: *\([0-9][0-9]*\) *$/\1/p' "$config" | head -n 1)"
  world="${world:-1}"
  start=$SECONDS
  out="$("$TESSERA" validate "$config" --world "$world" 2>&1)"; rc=$?
  if [[ $rc -ne 0 ]] || [[ "$out" != *$'\nvalid'* ]]; then
    echo "FAIL: tessera validate $config --world $world -> exit $rc:"; echo "$out" | tail -5
    failures=$((failures + 1))
    continue
  fi
  params="$(sed -n 's/^model: \([0-9,]*\) parameters.*/\1/p' <<< "$out" | tr -d ,)"
  if [[ -z "$params" ]]; then
    echo "FAIL: $name: no 'model: N parameters' line in:"; echo "$out" | head -3
    failures=$((failures + 1))
    continue
  fi
  if [[ -n "${published[$name]:-}" ]]; then
    if ! awk -v got="$params" -v want="${published[$name]}" \
         'BEGIN { d = (got - want) / want; if (d < 0) d = -d; exit !(d <= 0.01) }'; then
      echo "FAIL: $name: $params parameters, published ${published[$name]} (more than 1% apart)"
      failures=$((failures + 1))
      continue
    fi
    unset "published[$name]"
  fi
  echo "ok: $name: world $world, $params parameters ($((SECONDS - start)) s)"
  passes=$((passes + 1))
done
for name in "${!published[@]}"; do
  echo "FAIL: configs/$name.yaml is missing"
  failures=$((failures + 1))
done
# Invalid layouts stop with exit 2 and the numbers.
expect_invalid() {
  local pattern="$1"; shift
  local out rc
  out="$("$TESSERA" validate "$@" 2>&1)"; rc=$?
  if [[ $rc -ne 2 ]] || [[ "$out" != *"$pattern"* ]]; then
    echo "FAIL: tessera validate $* -> exit $rc (want 2 and '$pattern'):"; echo "$out" | tail -3
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}
expect_invalid "world size 6 is not divisible by tp x pp = 8 x 1 = 8" "$CONFIGS/llama3_8b.yaml" --world 6
expect_invalid "is not divisible by train.micro_batch x dp = 1 x 3 = 3" "$CONFIGS/llama3_8b.yaml" --world 24
expect_invalid "pipeline partition of model.n_layers = 80 over parallel.pp = 4 x virtual_stages = 3" \
  "$CONFIGS/llama3_70b.yaml" --world 64 --set parallel.virtual_stages=3
expect_invalid "model.ffn_dim = 100 is not a multiple of parallel.tp = 8" "$CONFIGS/tiny.yaml" --world 8 \
  --set parallel.tp=8 --set model.ffn_dim=100
expect_invalid "model.recompute_layers = 9 is more than the 4 layer(s) of the largest model chunk" \
  "$CONFIGS/tiny.yaml" --world 1 --set model.recompute=full --set model.recompute_layers=9
expect_invalid "model.recompute_layers = 2 counts the blocks that model.recompute: full recomputes" \
  "$CONFIGS/tiny.yaml" --world 1 --set model.recompute=selective --set model.recompute_layers=2
# The stages' layers come from parallel.pp_layers when it is given, as in the trainer.
out="$("$TESSERA" validate "$CONFIGS/cpu_pp.yaml" --world 4 --set 'parallel.pp_layers=[3,1]' 2>&1)"
if [[ "$out" == *"[0, 3) +emb"* && "$out" == *"[3, 4) +head"* ]]; then
  passes=$((passes + 1))
else
  echo "FAIL: validate with parallel.pp_layers=[3,1] does not show stages [0, 3) and [3, 4):"; echo "$out" | grep -A3 "stage "
  failures=$((failures + 1))
fi

echo "$passes passed, $failures failed"
[[ $failures -eq 0 && $passes -gt 0 ]]
