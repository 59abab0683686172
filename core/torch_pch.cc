// Exists only so that tessera_torch_pch has a translation unit to build its PCH with.
#include "core/torch_pch.h"
