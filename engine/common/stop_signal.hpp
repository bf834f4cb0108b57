#pragma once
// SIGTERM (SLURM's time limit, `scancel`), SIGINT and SIGUSR1 (SLURM's `--signal` warning) stop a conversion
// at the next point where the ranks agree on their state (exchange::collective), through the ordinary error
// path: every rank exits non-zero and the staging folder is removed.
#include <string>

namespace m2h {

// Installs the handlers. main calls it before MPI_Init (a signal may come during start-up) and again after it
// (MPI_Init may install handlers of its own).
void install_stop_signals();

// The signal that asked this process to stop, or 0.
int stop_signal() noexcept;

// "SIGTERM", ... for the signals above.
std::string signal_name(int signal);

}  // namespace m2h
