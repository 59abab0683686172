// `tessera schedule`: generates a pipeline schedule (or reads one from a file), simulates it and
// prints the per-rank timeline with its bubble fraction and peak live activations. Takes the
// arguments after the command name and returns the exit code: 0 success, 2 bad arguments or a
// schedule file that does not parse, is incomplete or deadlocks. trainer/main.cc dispatches here.
#pragma once

#include <string>
#include <vector>

namespace tessera::parallel::pipeline {

int ScheduleCommand(const std::vector<std::string>& args);

}  // namespace tessera::parallel::pipeline

// The usage line for trainer/main.cc's usage literal.
#define TESSERA_SCHEDULE_COMMAND_USAGE                                                                  \
  "  schedule --pp P --microbatches M [--schedule gpipe|1f1b|interleaved|zb-h1] [--virtual-stages V]\n" \
  "           [--file SCHEDULE.txt] [--costs F=1,B=2,I=1,W=1,comm=0] [--print-actions]\n"               \
  "                                              simulate a pipeline schedule: timeline and bubble\n"
