#pragma once

namespace segma {

// Lowers the scheduling priority of the calling thread (Linux: nice +10 for this thread only),
// so that background work (usage batches, key reloads) yields the core at once to the threads
// that serve requests when they share it. Never starves: a nice thread still gets its share of an
// otherwise busy core. Best effort: a failure is ignored (the thread keeps its priority).
void LowerThreadPriority();

}  // namespace segma
