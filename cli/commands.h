// The commands of `tessera`, one factory per command; each returns the command's table entry
// (name, usage, arguments, the function that runs it) from the file that implements it.
// command_table.cc lists them in the order `tessera help` shows.
#pragma once

#include "cli/command.h"

namespace tessera::cli {

// Training and configs: train_command.cc, config_command.cc, validate_command.cc,
// topology_command.cc, sweep_command.cc.
Command TrainCommand();
Command ConfigCommand();
Command ValidateCommand();
Command PlanCommand();
Command TopologyCommand();
Command SweepCommand();

// Data: tokenize_command.cc, tokenizer_command.cc, preprocess_command.cc, dataset_command.cc.
Command TokenizeCommand();
Command DetokenizeCommand();
Command TokenizerTrainCommand();
Command TokenizerBenchCommand();
Command TokenizerInfoCommand();
Command PreprocessCommand();
Command DatasetInfoCommand();
Command DatasetDumpCommand();

// Looking at runs and schedules: plot_command.cc, schedule_command.cc.
Command PlotCommand();
Command ScheduleCommand();

// Checkpoints and Hugging Face: export_hf_command.cc, import_hf_command.cc, logits_command.cc.
Command ExportHfCommand();
Command ImportHfCommand();
Command LogitsCommand();
// Text from a checkpoint's model: generate_command.cc.
Command GenerateCommand();
// Checkpoint digests and differences: checkpoint_command.cc.
Command CheckpointToolsCommand();

}  // namespace tessera::cli
