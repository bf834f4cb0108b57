#pragma once
// The launcher's record of what it submitted: <convert_logs_dir>/megatron2hf-launch.jsonl, one JSON object per
// submission, appended with a single write so concurrent launchers and crashes leave whole lines. Later
// records win over earlier ones for the same output.
#include <optional>
#include <string>
#include <vector>

namespace m2h::launch {

struct TaskRecord {
    std::size_t task = 0;  // array task id
    std::string iteration;  // "100" or "release"
    std::string input;      // the iteration folder given to the engine
    std::string output;     // the HF folder
    std::optional<int> exit_code;  // local executor only
    // The --then evaluation of this output: its SLURM job id, or (local executor) its exit code once run.
    std::string then_job;
    std::optional<int> then_exit_code;
};

struct SubmissionRecord {
    std::string time;       // ISO 8601, UTC
    std::string executor;   // "slurm" or "local"
    std::string job_id;     // SLURM array job id, or "local-..." for the local executor
    std::string log;        // the training log
    std::string log_name;
    std::string checkpoint_root;
    std::string format;
    std::string script;
    std::string then_script;  // --then, "" for none
    std::string job_name = "convert_full";  // job logs are <convert_logs_dir>/<job_name>_<job_id>_<task>.{out,err}
    std::vector<TaskRecord> tasks;
};

std::string state_file_path(const std::string& convert_logs_dir);
std::string record_to_line(const SubmissionRecord& r);  // one line of JSON, no newline
SubmissionRecord record_from_line(const std::string& line);  // throws m2h::Error on bad JSON or fields

void append_record(const std::string& path, const SubmissionRecord& r);
// Missing file → empty. A line that does not parse (e.g. cut by a full disk) is skipped with a warning that
// names the file and line.
std::vector<SubmissionRecord> load_records(const std::string& path);

std::string utc_now_iso();

}  // namespace m2h::launch
