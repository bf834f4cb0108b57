#include "status_command.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "evaluation_chain.hpp"
#include "launch_plan.hpp"
#include "local_files.hpp"
#include "log_selection.hpp"
#include "outputs.hpp"
#include "state_file.hpp"
#include "status.hpp"
#include "submission.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

// One output status reports on.
struct Target {
    std::string log_name, iteration, output;
    std::string saving;  // known for the iterations found on disk
};

// Targets: everything ever submitted from this folder, plus, when logs are given, every selected iteration
// on disk (so unsubmitted ones show too).
class TargetList {
  public:
    explicit TargetList(const std::vector<std::pair<std::string, LatestTask>>& latest) {
        for (const auto& [output, lt] : latest) add(lt.record->log_name, lt.task->iteration, output, "");
    }
    void add(const std::string& log_name, const std::string& iteration, const std::string& output, const std::string& saving) {
        if (const auto [at, fresh] = seen_.emplace(output, targets_.size()); fresh)
            targets_.push_back({log_name, iteration, output, saving});
        else
            targets_[at->second].saving = saving;
    }
    const std::vector<Target>& targets() const { return targets_; }

  private:
    std::vector<Target> targets_;
    std::map<std::string, std::size_t> seen_;  // output -> target
};

void add_iterations_on_disk(const Settings& s, TargetList& targets) {
    const auto save_dir = absolute(require(s, "save_checkpoints_dir"));
    const auto selection = parse_iteration_selection(s.get("iterations", "all"));
    std::size_t unreadable = 0;  // read_log has warned about each
    for (const auto& p : read_logs(select_logs(s.get("train_logs_dir_or_path")), unreadable)) {
        try {
            for (const auto& it : select_iterations(discover_iterations(p.run.checkpoint_root), selection).chosen)
                targets.add(p.name, it.key(), output_dir(save_dir, p.name, it), it.saving);
        } catch (const Error& e) {
            spdlog::warn("{}: {}", p.name, e.what());
        }
    }
}

// A target's row: its output on disk and, where a task took it on, that task as SLURM or the state file sees it.
StatusRow status_row(const Target& t, const std::map<std::string, LatestTask>& by_output, const SlurmView& slurm,
                     const std::string& convert_logs_dir) {
    const auto check = check_output(t.output);
    Observation o;
    o.output_complete = check.complete;
    o.output_problem = check.problem;
    o.saving = t.saving;
    o.slurm_answered = slurm.squeue_ok || slurm.sacct_ok;
    StatusRow row{t.log_name, t.iteration, t.output, TaskState::Unknown, "", "", "", ""};
    if (const auto it = by_output.find(t.output); it != by_output.end()) {
        o.record = it->second.record;
        o.task = it->second.task;
        row.job = o.record->executor == "slurm" ? job_key(*o.record, *o.task) : o.record->job_id + "_" + std::to_string(o.task->task);
        if (const auto st = slurm.states.find(row.job); st != slurm.states.end()) o.slurm_state = st->second;
        if (const auto re = slurm.reasons.find(row.job); re != slurm.reasons.end()) o.slurm_reason = re->second;
        row.then_job = o.task->then_job;
        const auto then_slurm = slurm.states.find(row.then_job);
        row.then_state = then_state(*o.record, *o.task,
                                    then_slurm == slurm.states.end() ? std::nullopt : std::optional(then_slurm->second));
    }
    const auto c = classify(o);
    row.state = c.state;
    row.detail = c.detail;
    if (c.state == TaskState::Failed || c.state == TaskState::Timeout) {
        const auto err = fs::path(convert_logs_dir) / (o.record->job_name + "_" + row.job + ".err");
        // Stopped by SLURM's warning signal, the engine exits 1 and the job ends FAILED: still the time limit.
        if (c.state == TaskState::Failed && o.slurm_state == "FAILED" && fs::exists(err) &&
            stopped_by_time_limit(read_file(err.string(), "the job's error log"))) {
            row.state = TaskState::Timeout;
            row.detail = "SLURM's warning signal before the time limit stopped it; the next launch resubmits it";
        }
        if (fs::exists(err)) row.detail += (row.detail.empty() ? "" : "; ") + std::string("see ") + err.string();
    }
    return row;
}

// By log, then by iteration number (release first).
void sort_rows(std::vector<StatusRow>& rows) {
    std::stable_sort(rows.begin(), rows.end(), [](const StatusRow& a, const StatusRow& b) {
        if (a.log_name != b.log_name) return a.log_name < b.log_name;
        const auto num = [](const std::string& it) { return it == "release" ? -1LL : std::stoll(it); };
        return num(a.iteration) < num(b.iteration);
    });
}

// Every (log, iteration) status knows of, classified: what `status` prints and what `clean` must not touch.
std::vector<StatusRow> status_rows(const Settings& s) {
    const auto convert_logs_dir = absolute(require(s, "convert_logs_dir"));
    const auto records = load_records(state_file_path(convert_logs_dir));
    const auto latest = latest_tasks(records);
    TargetList targets(latest);
    if (s.has("train_logs_dir_or_path")) add_iterations_on_disk(s, targets);

    const std::map<std::string, LatestTask> by_output(latest.begin(), latest.end());
    std::vector<std::string> job_ids;
    for (const auto& [output, lt] : latest)
        if (lt.record->executor == "slurm") {
            job_ids.push_back(lt.record->job_id);
            if (!lt.task->then_job.empty()) job_ids.push_back(lt.task->then_job);
        }
    const SlurmView slurm = query_slurm(job_ids);

    std::vector<StatusRow> rows;
    for (const auto& t : targets.targets()) rows.push_back(status_row(t, by_output, slurm, convert_logs_dir));
    sort_rows(rows);
    return rows;
}

// The staging folders beside the outputs status knows of, and whether a queued or running task may still be
// writing into one.
std::vector<std::pair<Leftover, bool>> leftovers(const std::vector<StatusRow>& rows) {
    std::set<std::string> hf_dirs, busy;
    for (const auto& r : rows) {
        hf_dirs.insert(fs::path(r.output).parent_path().string());
        if (r.state == TaskState::Queued || r.state == TaskState::Running) busy.insert(r.output);
    }
    std::vector<std::pair<Leftover, bool>> out;
    for (const auto& dir : hf_dirs)
        for (auto& l : leftover_staging(dir)) {
            const bool in_use = busy.count(l.output) > 0;
            out.emplace_back(std::move(l), in_use);
        }
    return out;
}

}  // namespace

int run_status(const Settings& s) {
    const auto format = s.get("format", "table");
    if (format != "table" && format != "json") throw Error("--format", "expected table or json, got '" + format + "'");
    const auto rows = status_rows(s);
    std::cout << (format == "json" ? render_status_json(rows) : render_status_table(rows)) << std::flush;
    for (const auto& [l, in_use] : leftovers(rows))
        spdlog::warn("leftover staging folder {} ({}){}", l.path, m2h::format_bytes(l.bytes),
                     in_use ? ": its task is queued or running" : ": `megatron2hf-launch clean` removes it");
    return 0;
}

// Removes the staging folders killed conversions left, except where a queued or running task may use one.
int run_clean(const Settings& s) {
    std::uint64_t freed = 0;
    std::size_t removed = 0;
    for (const auto& [l, in_use] : leftovers(status_rows(s))) {
        if (in_use) {
            spdlog::info("keeping {}: its task is queued or running", l.path);
            continue;
        }
        std::error_code ec;
        fs::remove_all(l.path, ec);
        if (ec) throw Error(l.path, "cannot remove: " + ec.message());
        spdlog::info("removed {} ({})", l.path, m2h::format_bytes(l.bytes));
        freed += l.bytes;
        ++removed;
    }
    spdlog::info("clean: removed {} leftover staging folder(s), {} freed", removed, m2h::format_bytes(freed));
    return 0;
}

}  // namespace m2h::launch
