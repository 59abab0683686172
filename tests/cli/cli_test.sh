#!/usr/bin/env bash
# End-to-end checks of the `tessera` command line: bad configs and arguments stop with exit
# code 2 and a message naming the key, file or value, before anything is allocated; `config`
# prints the effective config; `help` lists every command, and an unknown command exits 2.
# Usage: cli_test.sh PATH/TO/tessera
set -uo pipefail
TESSERA="$1"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failures=0
passes=0

# expect CODE PATTERN -- ARGS...: runs tessera ARGS, checks the exit code and that stderr+stdout
# contains PATTERN (a fixed string).
expect() {
  local code="$1" pattern="$2"; shift 3
  local out rc
  out=$("$TESSERA" "$@" 2>&1); rc=$?
  if [[ $rc -ne $code ]] || [[ "$out" != *"$pattern"* ]]; then
    echo "FAIL: tessera $* -> exit $rc (want $code), output:"; echo "$out" | head -5
    echo "      expected to contain: $pattern"
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
}

printf 'model:\n  dim: 64\n  n_heads: 4\n  n_kv_heads: 2\ntrain:\n  steps: 2\n  lrr: 0.1\n' > "$dir/typo.yaml"
printf 'model:\n  dim: 64\n  n_heads: 5\n' > "$dir/heads.yaml"
echo "some text" > "$dir/doc.txt"

expect 2 "usage: tessera <command>" -- 
expect 2 "unknown command 'trian'" -- trian
expect 2 "unknown command 'trian' (did you mean 'train'?)" -- trian
expect 2 "unknown command 'frobnicate'" -- frobnicate
expect 0 "commands:" -- help
expect 0 "commands:" -- --help
expect 2 "tessera tokenizer: error: needs a sub-command" -- tokenizer
expect 2 "unknown sub-command 'trian'" -- tokenizer trian
expect 0 "usage: tessera tokenizer train --vocab-size N" -- help tokenizer train
expect 0 "usage: tessera export-hf CHECKPOINT --out DIR" -- export-hf --help
expect 2 "tessera export-hf: error: --out needs a directory" -- export-hf ckpt --out
expect 2 "tessera dataset dump: error: --count expects a non-negative integer, got 'x'" -- dataset dump "$dir/doc" --count x
expect 2 "typo.yaml:7: unknown key 'train.lrr' (did you mean 'train.lr'?)" -- train "$dir/typo.yaml"
expect 2 "model.dim = 64 is not divisible by model.n_heads = 5" -- train "$dir/heads.yaml"
expect 2 "config file '$dir/missing.yaml' does not exist" -- train "$dir/missing.yaml"
expect 2 "--set train.lr=fast: key 'train.lr' expects number, got 'fast'" -- train --set train.lr=fast
expect 2 "key 'train.steps' = -3 is out of range" -- train --set train.steps=-3
expect 2 "model.n_heads = 8 is not divisible by model.n_kv_heads = 3" -- train --set model.n_kv_heads=3
expect 2 "unknown option '--sett'" -- train --sett a=b
expect 2 "--set needs KEY=VALUE" -- train --set
expect 2 "data.train: " -- train --set "data.train=$dir/nothing" --set train.eval_every=0 --set "train.run_dir=$dir/run"
expect 2 "$dir/nothing" -- train --set "data.train=$dir/nothing" --set train.eval_every=0 --set "train.run_dir=$dir/run"
expect 2 "no training data: set data.train" -- train --set train.eval_every=0 --set "train.run_dir=$dir/run"
# Packed-document options without the end-of-document token, or with one the corpus does not use.
expect 2 "data.document_mask finds documents by their end-of-document token: set data.eod_token" -- train --set "data.train=$dir/doc" --set train.eval_every=0 --set data.document_mask=true --set "train.run_dir=$dir/run"
parity="$(cd "$(dirname "$0")/../data/parity_data" && pwd)"
expect 2 "data.reset_position_ids needs documents that end with data.eod_token = 5, but $parity/text document 0 ends with token 4096" -- train --set "data.train=$parity/text" --set train.eval_every=0 --set data.reset_position_ids=true --set data.eod_token=5 --set "train.run_dir=$dir/run"
# train.cuda_graphs: true on the CPU trains eagerly and the start-up log says why; auto says nothing.
tiny=(--set model.dim=32 --set model.n_layers=1 --set model.n_heads=2 --set model.n_kv_heads=1 --set model.ffn_dim=64
      --set model.vocab_size=4224 --set train.seq_len=16 --set train.micro_batch=1 --set train.global_batch=1
      --set train.steps=1 --set train.eval_every=0 --set train.sample_every=0 --set checkpoint.at_end=false
      --set "data.train=$parity/text" --set "train.run_dir=$dir/graphs")
expect 0 "cuda graphs: off (the device is the CPU: graphs are a CUDA feature)" -- train "${tiny[@]}" --set train.cuda_graphs=true --set train.device=cpu
expect 0 "cuda graphs: off (the device is the CPU: graphs are a CUDA feature; train.profile_step: " -- train "${tiny[@]}" --set train.cuda_graphs=true --set train.device=cpu --set train.profile_step=1
quiet=$("$TESSERA" train "${tiny[@]}" --set train.cuda_graphs=auto --set train.device=cpu 2>&1)
if [[ "$quiet" == *"cuda graphs"* ]]; then
  echo "FAIL: train.cuda_graphs: auto on the CPU printed a cuda graphs line"; failures=$((failures + 1))
else
  passes=$((passes + 1))
fi
expect 0 "  lr: 0.25" -- config --set train.lr=0.25 --set "data.train=$dir/doc" --set train.eval_every=0
expect 0 "train: [{prefix: \"a\", weight: 0.7}, {prefix: \"b\", weight: 0.3}]" -- config --set "data.train=[{prefix: a, weight: 0.7}, {prefix: b, weight: 0.3}]" --set train.eval_every=0
expect 0 "| \`train.lr\` |" -- config --markdown
expect 0 "usage: tessera generate CHECKPOINT --tokenizer T" -- generate --help
expect 2 "no checkpoint given" -- generate --prompt hi
expect 2 "give one of --prompt TEXT or --prompts FILE" -- generate ckpt
expect 2 "--temperature must be a finite number >= 0 (0: greedy), got -0.5" -- generate ckpt --prompt hi --temperature -0.5
expect 2 "--top-p must be in (0, 1] (1: off), got 1.5" -- generate ckpt --prompt hi --top-p 1.5
expect 2 "--top-k must be >= 0 (0: off), got -3" -- generate ckpt --prompt hi --top-k -3
expect 2 "--max-new-tokens" -- generate ckpt --prompt hi --max-new-tokens 0
expect 2 "--tokenizer is required" -- generate ckpt --prompt hi
expect 2 "expected 'digest' or 'diff'" -- checkpoint
expect 2 "unknown action 'dif'" -- checkpoint dif a b
expect 2 "diff takes 2 checkpoint path(s), got 1" -- checkpoint diff "$dir"
expect 2 "--step expects a step number, got 'last'" -- checkpoint digest "$dir" --step last
expect 2 "checkpoint path '$dir/nothing' does not exist" -- checkpoint digest "$dir/nothing"
expect 2 "has no manifest.pb" -- checkpoint diff "$dir" "$dir" --step 3

# `tessera help` lists every command, each at the start of a line of the list.
help_text=$("$TESSERA" help)
for name in train config validate sweep topology tokenize detokenize "tokenizer train" "tokenizer bench" \
            "tokenizer info" preprocess "dataset info" "dataset dump" plot schedule export-hf import-hf \
            logits generate checkpoint help; do
  if [[ "$help_text" != *$'\n'"  $name "* ]]; then
    echo "FAIL: tessera help does not list '$name'"
    failures=$((failures + 1))
  else
    passes=$((passes + 1))
  fi
done

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
