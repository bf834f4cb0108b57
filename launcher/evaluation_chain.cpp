#include "evaluation_chain.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "status.hpp"
#include "submission.hpp"

namespace m2h::launch {

namespace fs = std::filesystem;

std::map<std::string, std::string> then_environment(const SubmissionRecord& r, const TaskRecord& t) {
    return {{"M2H_HF_PATH", t.output},
            {"M2H_ITERATION", t.iteration},
            {"M2H_LOG_NAME", r.log_name},
            {"M2H_LOG", r.log},
            {"M2H_CHECKPOINT_PATH", t.input}};
}

std::vector<std::string> then_dependency_args(const std::string& array_task) {
    return {"--dependency=afterok:" + array_task, "--kill-on-invalid-dep=yes"};
}

std::string then_state(const SubmissionRecord& r, const TaskRecord& t, const std::optional<std::string>& slurm_state) {
    if (r.then_script.empty()) return "";
    if (r.executor == "local") {
        if (!t.then_exit_code) return "not run";
        return *t.then_exit_code == 0 ? "completed" : "failed (exit " + std::to_string(*t.then_exit_code) + ")";
    }
    if (t.then_job.empty()) return "not submitted";
    if (!slurm_state) return "unknown";
    if (*slurm_state == "PENDING") return "queued";
    std::string s = *slurm_state;
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return s;
}

void submit_then_jobs(SubmissionRecord& record, const std::string& convert_logs_dir, std::size_t& failures) {
    for (auto& t : record.tasks) {
        try {
            t.then_job = submit_sbatch(record.then_script, convert_logs_dir, then_dependency_args(job_key(record, t)),
                                       {t.output}, then_environment(record, t));
            spdlog::info("{}: iteration {}: {} queued as job {}, after conversion {}_{}", record.log_name, t.iteration,
                         record.then_script, t.then_job, record.job_id, t.task);
        } catch (const Error& e) {
            ++failures;
            spdlog::error("{}: iteration {}: the --then job was not submitted: {}", record.log_name, t.iteration, e.what());
        }
    }
}

void run_then_here(const SubmissionRecord& record, TaskRecord& t, const std::string& convert_logs_dir, std::size_t& failures) {
    CommandOptions o;
    o.cwd = convert_logs_dir;
    o.timeout_s = 0;
    o.set_env = then_environment(record, t);
    const auto stem = (fs::path(convert_logs_dir) /
                       ("then_" + record.job_name + "_" + record.job_id + "_" + std::to_string(t.task))).string();
    o.stdout_file = stem + ".out";
    o.stderr_file = stem + ".err";
    // As sbatch would: the script's own interpreter when it may be executed, bash otherwise.
    std::vector<std::string> argv{record.then_script, t.output};
    if (::access(record.then_script.c_str(), X_OK) != 0) argv.insert(argv.begin(), "bash");
    const auto r = run_command(argv, o);
    t.then_exit_code = r.exit_code;
    if (r.exit_code == 0) {
        spdlog::info("{}: iteration {}: {} done", record.log_name, t.iteration, record.then_script);
    } else {
        ++failures;
        spdlog::error("{}: iteration {}: {} failed (exit {}); see {}.err", record.log_name, t.iteration, record.then_script,
                      r.exit_code, stem);
    }
}

}  // namespace m2h::launch
