#pragma once
// Talking to SLURM and running job scripts: every command is an argv run with fork/exec, never a shell
// string, with a bounded wait. The parsers of sbatch/squeue/sacct output are pure and tested on their own.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

struct CommandResult {
    int exit_code = -1;  // 128 + signal when killed by one
    std::string out, err;
    bool timed_out = false;
    bool not_found = false;  // exec failed: no such program
};

struct CommandOptions {
    std::string cwd;                             // "" = inherit
    double timeout_s = 60;                       // 0 = no limit
    std::map<std::string, std::string> set_env;  // added to (or replacing in) the environment
    std::vector<std::string> unset_env;
    std::string stdout_file, stderr_file;        // "" = capture into the result
};

CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& options = {});

// The first executable `name` on $PATH.
std::optional<std::string> find_on_path(const std::string& name);

// "1234" or "1234;cluster" (sbatch --parsable) → "1234"; nullopt for anything else.
std::optional<std::string> parse_sbatch_parsable(std::string_view out);

// `sbatch --parsable --chdir=DIR EXTRA... SCRIPT SCRIPT_ARGS...`, run in DIR with `env` added to the environment
// sbatch passes on to the job. Returns the job id; throws m2h::Error(script, ...) with sbatch's own message on
// failure.
std::string submit_sbatch(const std::string& script, const std::string& dir, const std::vector<std::string>& extra_args,
                          const std::vector<std::string>& script_args = {}, const std::map<std::string, std::string>& env = {});

// The id of this user's pending or running job named `name`, if any. Throws m2h::Error when squeue fails.
std::optional<std::string> active_job_named(const std::string& name);

// Task key "JOB_TASK" (array task) or "JOB" → SLURM state name (PENDING, RUNNING, FAILED, ...).
using JobStates = std::map<std::string, std::string>;

// squeue -h -r -t all -o '%F|%K|%T|%r' lines. "N/A" task ids (not an array) give the key "JOB". The reason
// column (JobHeldUser, QOSMaxJobsPerUserLimit, ...) goes to `reasons` when given.
JobStates parse_squeue(std::string_view out, JobStates* reasons = nullptr);
// sacct -n -P -X -o JobID,State lines: "123_4|FAILED", "123|CANCELLED by 0", "123_[5-9]|PENDING".
JobStates parse_sacct(std::string_view out);

struct SlurmView {
    JobStates states;
    JobStates reasons;  // squeue's reason for pending tasks
    bool squeue_ok = false;
    bool sacct_ok = false;
};
// Asks squeue (jobs still known to slurmctld, finished ones included while it remembers them) and sacct
// (history, where accounting is enabled) about these job ids. Failures just leave the flags false.
SlurmView query_slurm(const std::vector<std::string>& job_ids);

}  // namespace m2h::launch
