#pragma once
// The local executor: a job array's tasks run one after another on this machine, each as `bash SCRIPT` with
// SLURM_ARRAY_TASK_ID set, as sbatch would run them, each followed by the --then script when it converted.
// Outside an allocation the script starts the engine with mpirun.
#include <cstddef>
#include <string>

#include "state_file.hpp"

namespace m2h::launch {

// "local-<time>-<pid>": unique among this machine's launches, and never taken for a SLURM job id.
std::string local_job_id();

// Runs every task of `record` (its script, job name and job id) in `convert_logs_dir`, job logs beside it as
// SLURM names them; stores each exit code in the record and counts each failed task in `failures` as it
// goes (so a later task that cannot start leaves the earlier ones counted).
void run_tasks_here(SubmissionRecord& record, const std::string& convert_logs_dir, std::size_t& failures);

}  // namespace m2h::launch
