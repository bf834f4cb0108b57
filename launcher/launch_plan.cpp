#include "launch_plan.hpp"

#include <filesystem>
#include <map>

#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "local_files.hpp"
#include "outputs.hpp"
#include "settings.hpp"
#include "status.hpp"
#include "submission.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

using LatestByOutput = std::map<std::string, LatestTask>;

// Restarted runs leave one log per job, all saving into the same folder: convert that folder once, under the
// log that finished training (its name is the one published models carry), else under the last log.
std::vector<LogPlan> dedupe_by_root(std::vector<LogPlan> plans) {
    std::map<std::string, std::size_t> chosen;
    for (std::size_t i = 0; i < plans.size(); ++i) {
        const auto [it, fresh] = chosen.emplace(plans[i].canonical_root, i);
        if (fresh) continue;
        const auto& kept = plans[it->second];
        const bool replace = plans[i].finished || !kept.finished;
        const auto& dropped = replace ? kept : plans[i];
        spdlog::info("{}: same checkpoint folder as {}; converting it once, as {}", dropped.name,
                     replace ? plans[i].name : kept.name, replace ? plans[i].name : kept.name);
        if (replace) it->second = i;
    }
    std::vector<LogPlan> out;
    for (std::size_t i = 0; i < plans.size(); ++i) {
        const auto it = chosen.find(plans[i].canonical_root);
        if (it->second == i) out.push_back(std::move(plans[i]));
    }
    return out;
}

std::string describe_model(const RunInfo& run) {
    std::string s = run.format.empty() ? "format not in the log" : run.format;
    s += ", TP " + std::to_string(run.tp) + " PP " + std::to_string(run.pp);
    if (run.vpp > 1) s += " VPP " + std::to_string(run.vpp);
    if (run.model_bytes) s += ", ~" + m2h::format_bytes(*run.model_bytes);
    return s;
}

// Sorts the chosen iterations into converted (done), being saved, and to do.
void plan_iterations(LogPlan& p, const std::vector<Iteration>& chosen, const std::string& save_dir) {
    for (const auto& it : chosen) {
        const auto out = output_dir(save_dir, p.name, it);
        if (check_output(out).complete) {
            ++p.done;
            continue;
        }
        if (!it.saving.empty()) {
            ++p.saving;
            spdlog::info("{}: {} is still being saved (Megatron has not written {} yet): left for a later run",
                         p.name, it.folder_name(), it.saving);
            continue;
        }
        p.todo.push_back(it);
        p.todo_outputs.push_back(out);
    }
}

// The SLURM jobs that last took on any output still to do: only those need asking about.
std::vector<std::string> earlier_slurm_jobs(const std::vector<LogPlan>& work, const LatestByOutput& latest_by_output) {
    std::vector<std::string> job_ids;
    for (const auto& p : work)
        for (const auto& out : p.todo_outputs)
            if (const auto it = latest_by_output.find(out); it != latest_by_output.end() && it->second.record->executor == "slurm")
                job_ids.push_back(it->second.record->job_id);
    return job_ids;
}

// The state of the SLURM task that last took on `output`, or nullopt when no SLURM job did.
std::optional<Classified> earlier_task_state(const std::string& output, const LatestByOutput& latest_by_output,
                                             const SlurmView& slurm, std::string& job) {
    const auto it = latest_by_output.find(output);
    if (it == latest_by_output.end() || it->second.record->executor != "slurm") return std::nullopt;
    Observation o;
    o.record = it->second.record;
    o.task = it->second.task;
    o.slurm_answered = slurm.squeue_ok || slurm.sacct_ok;
    job = job_key(*o.record, *o.task);
    if (const auto st = slurm.states.find(job); st != slurm.states.end()) o.slurm_state = st->second;
    if (const auto re = slurm.reasons.find(job); re != slurm.reasons.end()) o.slurm_reason = re->second;
    return classify(o);
}

// Keeps the entries of p.todo (and p.todo_outputs) for which keep(iteration, output) is true.
template <class Keep>
void keep_todo(LogPlan& p, Keep keep) {
    std::vector<Iteration> todo;
    std::vector<std::string> outputs;
    for (std::size_t i = 0; i < p.todo.size(); ++i)
        if (keep(p.todo[i], p.todo_outputs[i])) {
            todo.push_back(p.todo[i]);
            outputs.push_back(p.todo_outputs[i]);
        }
    p.todo = std::move(todo);
    p.todo_outputs = std::move(outputs);
}

}  // namespace

std::optional<LogPlan> read_log(const std::string& log_path) {
    LogPlan p;
    p.log = absolute(log_path);
    p.name = log_name_of(p.log);
    try {
        const auto text = read_file(p.log, "the training log");
        const auto log = parse_training_log(text);
        p.run = describe_run(log, p.log);
        p.provenance = training_provenance(text, p.log);
        p.finished = log.finished;
    } catch (const Error& e) {
        spdlog::warn("skipping {}", e.what());
        return std::nullopt;
    }
    std::error_code ec;
    p.canonical_root = fs::weakly_canonical(p.run.checkpoint_root, ec).string();
    if (ec) p.canonical_root = p.run.checkpoint_root;
    return p;
}

std::vector<LogPlan> read_logs(const std::vector<std::string>& logs, std::size_t& skipped) {
    std::vector<LogPlan> plans;
    for (const auto& log : logs) {
        if (auto p = read_log(log))
            plans.push_back(std::move(*p));
        else
            ++skipped;
    }
    return dedupe_by_root(std::move(plans));
}

std::vector<LogPlan> find_work(std::vector<LogPlan> plans, const IterationSelection& selection, const std::string& save_dir,
                               std::size_t& skipped) {
    std::vector<LogPlan> work;
    for (auto& p : plans) {
        std::vector<Iteration> available;
        try {
            available = discover_iterations(p.run.checkpoint_root);
        } catch (const Error& e) {
            spdlog::warn("skipping {}: {} (from its {})", p.name, e.what(), p.run.root_source);
            ++skipped;
            continue;
        }
        if (available.empty())
            spdlog::warn("{}: no iter_* or release/ folder in {} (from its {})", p.name, p.run.checkpoint_root, p.run.root_source);
        const auto chosen = select_iterations(available, selection);
        for (const auto& missing : chosen.not_on_disk) spdlog::warn("{}: {} is not on disk under {}", p.name, missing, p.run.checkpoint_root);
        plan_iterations(p, chosen.chosen, save_dir);
        work.push_back(std::move(p));
    }
    return work;
}

void drop_in_flight(std::vector<LogPlan>& work, const std::vector<SubmissionRecord>& records) {
    const auto latest = latest_tasks(records);
    const LatestByOutput latest_by_output(latest.begin(), latest.end());
    const auto job_ids = earlier_slurm_jobs(work, latest_by_output);
    const SlurmView slurm = job_ids.empty() ? SlurmView{} : query_slurm(job_ids);
    for (auto& p : work) {
        keep_todo(p, [&](const Iteration& it, const std::string& output) {
            std::string job;
            const auto c = earlier_task_state(output, latest_by_output, slurm, job);
            if (!c || (c->state != TaskState::Queued && c->state != TaskState::Running)) return true;
            ++p.in_flight;
            spdlog::info("{}: {} is already {} as job {}", p.name, it.folder_name(), state_name(c->state), job);
            return false;
        });
        spdlog::info("{}: checkpoint {} ({}); {} converted, {} queued or running, {} being saved, {} to convert", p.name,
                     p.run.checkpoint_root, describe_model(p.run), p.done, p.in_flight, p.saving, p.todo.size());
    }
}

void drop_exhausted(std::vector<LogPlan>& work, const std::vector<SubmissionRecord>& records, std::size_t max_attempts) {
    std::map<std::string, std::size_t> attempts;
    for (const auto& r : records)
        for (const auto& t : r.tasks) ++attempts[t.output];
    for (auto& p : work)
        keep_todo(p, [&](const Iteration& it, const std::string& output) {
            const auto n = attempts.find(output);
            if (n == attempts.end() || n->second < max_attempts) return true;
            ++p.given_up;
            spdlog::error("{}: {} was submitted {} time(s) and is still not converted; not submitting it again "
                          "(see `megatron2hf-launch status`)", p.name, it.folder_name(), n->second);
            return false;
        });
}

}  // namespace m2h::launch
