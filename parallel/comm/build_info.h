// Build information generated at build time (see cmake/TesseraGitRevision.cmake).
#pragma once

#include "tessera_git_revision.h"

#ifndef TESSERA_GIT_REVISION
#define TESSERA_GIT_REVISION "unknown"
#endif
