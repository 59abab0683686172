// The data subcommands of the `tessera` CLI: tokenize, detokenize, tokenizer (train, bench,
// info), preprocess and dataset (info, dump). Each takes the arguments after its name and returns the process
// exit code (0 success, 1 runtime failure, 2 bad command line). trainer/main.cc dispatches to them.
#pragma once

#include <string>
#include <vector>

namespace tessera::data {

int TokenizeCommand(const std::vector<std::string>& args);
int DetokenizeCommand(const std::vector<std::string>& args);
int TokenizerCommand(const std::vector<std::string>& args);
int PreprocessCommand(const std::vector<std::string>& args);
int DatasetCommand(const std::vector<std::string>& args);

// Lines for the top-level usage text, one per subcommand.
extern const char kDataCommandsUsage[];

}  // namespace tessera::data

// The same lines as a string literal, so trainer/main.cc can splice them into its usage literal.
#define TESSERA_DATA_COMMANDS_USAGE                                                                     \
  "  tokenize --tokenizer T [--whole|--null] [--allow-special]\n"                                       \
  "                                              UTF-8 text on stdin -> ids (a line of ids per line)\n" \
  "  detokenize --tokenizer T [--null]           lines of ids on stdin -> text\n"                       \
  "  tokenizer train --vocab-size N --output F INPUT...   learn a byte-level BPE rank file\n"           \
  "  tokenizer bench --tokenizer T [--threads N] FILE...  encode throughput in MB/s\n"                  \
  "  tokenizer info --tokenizer T                print ranks, vocabulary size and specials\n"           \
  "  preprocess --tokenizer T --output-prefix P INPUT...  corpora -> Megatron .bin/.idx shards\n"       \
  "  dataset info|dump PREFIX [--first D] [--count N]  inspect Megatron .bin/.idx shards\n"             \
  "     (T: cl100k_base:FILE, o200k_base:FILE, llama3:FILE or a rank file; see docs/data.md)\n"

namespace tessera::data {}  // namespace tessera::data
