#pragma once
// --then: an evaluation script chained to each conversion. Under SLURM it is submitted with
// --dependency=afterok on the conversion's array task, and --kill-on-invalid-dep so that a failed conversion
// cancels it rather than leaving it pending for ever; the local executor runs it after a conversion that
// succeeded. The script gets the HF folder as $1 and in its environment.
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "state_file.hpp"

namespace m2h::launch {

// M2H_HF_PATH, M2H_ITERATION, M2H_LOG_NAME, M2H_LOG and M2H_CHECKPOINT_PATH of task `t`.
std::map<std::string, std::string> then_environment(const SubmissionRecord& r, const TaskRecord& t);

// The sbatch options that chain a job to the array task "JOB_TASK".
std::vector<std::string> then_dependency_args(const std::string& array_task);

// The evaluation's state in status: "queued", "running", "completed", "failed", "cancelled", ... from SLURM's
// state of it (nullopt: SLURM does not know it) or the local exit code; "" where none was chained.
std::string then_state(const SubmissionRecord& r, const TaskRecord& t, const std::optional<std::string>& slurm_state);

// Submits the evaluation of every task of `record`, whose array is submitted, and stores each job id in its
// task. A submission that fails is logged and counted in `failures`; the others still go.
void submit_then_jobs(SubmissionRecord& record, const std::string& convert_logs_dir, std::size_t& failures);

// The local executor's: runs the evaluation of task `t` (converted) here, logs then_<job_name>_<job>_<task>.{out,err}
// beside the conversion's, and stores its exit code in `t`.
void run_then_here(const SubmissionRecord& record, TaskRecord& t, const std::string& convert_logs_dir, std::size_t& failures);

}  // namespace m2h::launch
