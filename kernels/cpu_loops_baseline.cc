// The fused CPU loops (cpu_loops_body.h) for any x86-64 CPU (and any other architecture).
#define TS_CPU_LOOPS_ISA baseline
#include "kernels/cpu_loops_body.h"
