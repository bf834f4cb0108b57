#include "local_executor.hpp"

#include <unistd.h>

#include <ctime>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "evaluation_chain.hpp"
#include "submission.hpp"

namespace m2h::launch {

namespace fs = std::filesystem;

std::string local_job_id() { return "local-" + std::to_string(::time(nullptr)) + "-" + std::to_string(::getpid()); }

void run_tasks_here(SubmissionRecord& record, const std::string& convert_logs_dir, std::size_t& failures) {
    // A task may convert several iterations (--iterations-per-task): their records share its id and follow it.
    for (std::size_t first = 0; first < record.tasks.size();) {
        const std::size_t task = record.tasks[first].task;
        std::size_t end = first;
        while (end < record.tasks.size() && record.tasks[end].task == task) ++end;
        CommandOptions o;
        o.cwd = convert_logs_dir;
        o.timeout_s = 0;
        o.set_env["SLURM_ARRAY_TASK_ID"] = std::to_string(task);
        // The script takes srun when SLURM_JOB_ID is set; run from inside an allocation it must still use mpirun.
        o.unset_env = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID"};
        const auto stem = (fs::path(convert_logs_dir) / (record.job_name + "_" + record.job_id + "_" + std::to_string(task))).string();
        o.stdout_file = stem + ".out";
        o.stderr_file = stem + ".err";
        const auto r = run_command({"bash", record.script}, o);
        for (std::size_t i = first; i < end; ++i) {
            auto& t = record.tasks[i];
            t.exit_code = r.exit_code;
            // A task of several iterations that failed may have converted some of them: the folder tells.
            const bool converted = r.exit_code == 0 || fs::exists(t.output);
            if (converted) {
                spdlog::info("{}: {} converted", record.log_name, t.output);
                if (!record.then_script.empty()) run_then_here(record, t, convert_logs_dir, failures);
            } else {
                ++failures;
                spdlog::error("{}: iteration {} failed (exit {}); see {}.err", record.log_name, t.iteration, r.exit_code, stem);
            }
        }
        first = end;
    }
}

}  // namespace m2h::launch
