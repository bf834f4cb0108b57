#pragma once
// What became of each (log, iteration): converted / queued / running / failed / not submitted. The
// classification is a pure function of what was observed (output folder, state file, squeue, sacct).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "state_file.hpp"
#include "submission.hpp"

namespace m2h::launch {

enum class TaskState { Converted, Queued, Running, Failed, Timeout, NotSubmitted, Saving, Unknown };
// "converted", "queued", "running", "failed", "timeout", "not submitted", "saving", "unknown"
std::string state_name(TaskState s);

struct Observation {
    bool output_complete = false;
    std::string saving;                     // the checkpoint's save is in progress: what it has yet to write
    std::string output_problem;             // check_output's reason when incomplete
    const SubmissionRecord* record = nullptr;  // latest submission of this output, if any
    const TaskRecord* task = nullptr;
    std::optional<std::string> slurm_state;  // of that task, when squeue or sacct knows it
    std::string slurm_reason;                // squeue's reason, for a pending task
    bool slurm_answered = false;             // squeue (or sacct) could be asked at all
};

struct Classified {
    TaskState state = TaskState::Unknown;
    std::string detail;
};
Classified classify(const Observation& o);

// Whether a job's .err text holds the engine's error for a stop on SIGUSR1 (the job scripts' --signal warning
// before the time limit) or SIGTERM (the limit itself). A job the warning stopped ends FAILED, not TIMEOUT.
bool stopped_by_time_limit(std::string_view job_err_text);

// "JOB_TASK" for a SLURM submission's task.
std::string job_key(const SubmissionRecord& r, const TaskRecord& t);

struct LatestTask {
    const SubmissionRecord* record = nullptr;
    const TaskRecord* task = nullptr;
};
// The latest submission of each output folder (records are in submission order). Keyed by output path.
std::vector<std::pair<std::string, LatestTask>> latest_tasks(const std::vector<SubmissionRecord>& records);

struct StatusRow {
    std::string log_name;
    std::string iteration;
    std::string output;
    TaskState state = TaskState::Unknown;
    std::string job;
    std::string detail;
    std::string then_job, then_state;  // the --then evaluation chained to it, if any
};

// A THEN column (job and state) appears when any row has a chained evaluation.
std::string render_status_table(const std::vector<StatusRow>& rows);
std::string render_status_json(const std::vector<StatusRow>& rows);

}  // namespace m2h::launch
