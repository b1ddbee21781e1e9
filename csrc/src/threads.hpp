// Thread-count resolution shared by every entry point.
#pragma once

#include <cstdint>

namespace optdiff {
// Threads to use for `work_items` independent items when the caller asked
// for `requested` (0 = the global default).
int resolve_threads(int requested, int64_t work_items);
}  // namespace optdiff
