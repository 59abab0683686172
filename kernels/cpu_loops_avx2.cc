// The fused CPU loops (cpu_loops_body.h) with AVX2 (8 fp32 lanes per instruction); compiled with
// -mavx2 on x86-64 only (kernels/CMakeLists.txt), run only where the CPU has AVX2 (cpu_loops.cc).
#define TS_CPU_LOOPS_ISA avx2
#include "kernels/cpu_loops_body.h"
