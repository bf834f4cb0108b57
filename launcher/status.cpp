#include "status.hpp"

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

namespace m2h::launch {

std::string state_name(TaskState s) {
    switch (s) {
        case TaskState::Converted: return "converted";
        case TaskState::Queued: return "queued";
        case TaskState::Running: return "running";
        case TaskState::Failed: return "failed";
        case TaskState::Timeout: return "timeout";
        case TaskState::NotSubmitted: return "not submitted";
        case TaskState::Saving: return "saving";
        case TaskState::Unknown: return "unknown";
    }
    return "unknown";
}

std::string job_key(const SubmissionRecord& r, const TaskRecord& t) { return r.job_id + "_" + std::to_string(t.task); }

Classified classify(const Observation& o) {
    if (o.output_complete) return {TaskState::Converted, ""};
    // Megatron is still writing it: nothing is submitted for it, and nothing earlier counts against it.
    if (!o.saving.empty()) return {TaskState::Saving, "Megatron has not written " + o.saving + " yet"};
    if (!o.record || !o.task) return {TaskState::NotSubmitted, o.output_problem};
    if (o.record->executor == "local") {
        if (!o.task->exit_code) return {TaskState::Failed, "local run did not finish"};
        if (*o.task->exit_code != 0) return {TaskState::Failed, "exit code " + std::to_string(*o.task->exit_code)};
        return {TaskState::Failed, "finished, but the output is incomplete: " + o.output_problem};
    }
    if (o.slurm_state) {
        static const std::set<std::string> queued{"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                                                  "RESV_DEL_HOLD", "POWER_UP_NODE"};
        static const std::set<std::string> running{"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "SUSPENDED"};
        const auto& s = *o.slurm_state;
        if (queued.count(s)) {
            const bool plain = o.slurm_reason.empty() || o.slurm_reason == "None" || o.slurm_reason == "(null)";
            return {TaskState::Queued, (s == "PENDING" ? "" : s) + (plain ? "" : (s == "PENDING" ? "" : ", ") + o.slurm_reason)};
        }
        if (running.count(s)) return {TaskState::Running, s == "RUNNING" ? "" : s};
        if (s == "COMPLETED") return {TaskState::Failed, "job completed, but the output is incomplete: " + o.output_problem};
        // The time limit: the engine stopped on SLURM's signal and removed its partial output; run the launcher
        // again (with a longer --time) to convert it.
        if (s == "TIMEOUT") return {TaskState::Timeout, "the time limit ended it; the next launch resubmits it"};
        // SLURM stopped hearing from a node of the allocation (SlurmdTimeout) and ended the job on the others.
        if (s == "NODE_FAIL") return {TaskState::Failed, "NODE_FAIL: a node of its allocation failed; the next launch resubmits it"};
        return {TaskState::Failed, s};
    }
    if (!o.slurm_answered) return {TaskState::Unknown, "squeue and sacct cannot be asked; output " + o.output_problem};
    // Submitted, forgotten by slurmctld, not in accounting, and no output: it ended without converting.
    return {TaskState::Failed, "job ended without an output (" + o.output_problem + ")"};
}

bool stopped_by_time_limit(std::string_view job_err_text) {
    // engine/main.cpp prints exchange::collective's error for a stop signal as this one line (srun may prefix it).
    for (const std::string_view signal : {"SIGUSR1", "SIGTERM"})
        if (job_err_text.find("megatron2hf: error: " + std::string(signal) +
                              ": stopped before the conversion finished") != std::string_view::npos)
            return true;
    return false;
}

std::vector<std::pair<std::string, LatestTask>> latest_tasks(const std::vector<SubmissionRecord>& records) {
    std::map<std::string, std::size_t> index;
    std::vector<std::pair<std::string, LatestTask>> out;
    for (const auto& r : records)
        for (const auto& t : r.tasks) {
            const auto [it, fresh] = index.emplace(t.output, out.size());
            if (fresh)
                out.push_back({t.output, {&r, &t}});
            else
                out[it->second].second = {&r, &t};
        }
    return out;
}

std::string render_status_table(const std::vector<StatusRow>& rows) {
    const bool then = std::any_of(rows.begin(), rows.end(), [](const StatusRow& r) { return !r.then_state.empty(); });
    std::vector<std::vector<std::string>> cells{{"LOG", "ITERATION", "STATE", "JOB"}};
    if (then) cells[0].push_back("THEN");
    cells[0].push_back("DETAIL");
    for (const auto& r : rows) {
        cells.push_back({r.log_name, r.iteration, state_name(r.state), r.job});
        if (then) cells.back().push_back(r.then_state.empty() ? "" : (r.then_job.empty() ? "" : r.then_job + " ") + r.then_state);
        cells.back().push_back(r.detail);
    }
    const std::size_t columns = cells[0].size();
    std::vector<std::size_t> width(columns, 0);
    for (const auto& c : cells)
        for (std::size_t i = 0; i + 1 < columns; ++i) width[i] = std::max(width[i], c[i].size());
    std::string out;
    for (const auto& c : cells) {
        std::string line;
        for (std::size_t i = 0; i < columns; ++i) {
            line += c[i];
            if (i + 1 < columns) line += std::string(width[i] - c[i].size() + 2, ' ');
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    std::map<std::string, int> counts;
    for (const auto& r : rows) ++counts[state_name(r.state)];
    std::string summary;
    for (const auto& [name, n] : counts) summary += (summary.empty() ? "" : ", ") + std::to_string(n) + " " + name;
    out += "\n" + std::to_string(rows.size()) + " iteration(s)" + (summary.empty() ? "" : ": " + summary) + "\n";
    return out;
}

std::string render_status_json(const std::vector<StatusRow>& rows) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
        nlohmann::json row{{"log", r.log_name}, {"iteration", r.iteration}, {"output", r.output}, {"state", state_name(r.state)},
                           {"job", r.job}, {"detail", r.detail}};
        if (!r.then_state.empty()) {
            row["then_job"] = r.then_job;
            row["then_state"] = r.then_state;
        }
        j.push_back(std::move(row));
    }
    return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace m2h::launch
