#include "array_submission.hpp"

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "evaluation_chain.hpp"
#include "local_executor.hpp"
#include "local_files.hpp"
#include "outputs.hpp"
#include "state_file.hpp"
#include "submission.hpp"
#include "task_batches.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

// One array: the job script's values and the state file's record of it.
struct ArrayJob {
    JobSpec spec;
    SubmissionRecord record;
};

// Container binds: the checkpoint roots holding the inputs, the output root and the assets. A folder inside
// another bound folder is left out. Apptainer and pyxis split binds on ':' and ',', so those cannot appear.
std::vector<std::string> container_binds(const std::vector<std::string>& paths) {
    std::vector<std::string> sorted(paths.begin(), paths.end());
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::vector<std::string> binds;
    for (const auto& p : sorted) {
        if (p.find_first_of(":,") != std::string::npos)
            throw Error(p, "cannot be bound into a container (apptainer and pyxis split bind lists on ':' and ',')");
        const bool inside = std::any_of(binds.begin(), binds.end(), [&](const std::string& b) {
            return p == b || (p.starts_with(b) && (b == "/" || p[b.size()] == '/'));
        });
        if (!inside) binds.push_back(p);
    }
    return binds;
}

std::string display_command(const std::vector<std::string>& argv) { return shell_words(argv); }

// The array of `p`'s task batches [begin, end), as task 0, 1, ...; every iteration of a batch is recorded
// with its batch's task id.
ArrayJob make_array_job(const LaunchConfig& c, const LogPlan& p, const std::string& assets,
                        const std::vector<TaskBatch>& batches, std::size_t begin, std::size_t end,
                        const std::vector<BatchItem>& items, const std::string& script_path) {
    ArrayJob job{c.base, {}};
    JobSpec& spec = job.spec;
    SubmissionRecord& record = job.record;
    spec.resources = size_resources(p.run.model_bytes, c.request);
    spec.log = p.log;
    spec.checkpoint_root = p.run.checkpoint_root;
    spec.assets = assets;
    for (auto& a : model_card_arguments(p.provenance)) spec.engine_args.push_back(std::move(a));
    std::vector<std::string> bind_paths{output_root(c.save_dir, p.name)};
    if (!assets.empty()) bind_paths.push_back(assets);
    if (!c.model_card.empty()) bind_paths.push_back(fs::path(c.model_card).parent_path().string());
    for (std::size_t k = begin; k < end; ++k) {
        const auto& b = batches[k];
        spec.inputs.push_back(b.input);
        spec.iterations.push_back(b.iteration);
        spec.outputs.push_back(b.output);
        // The real folder's root: a cool-down run's symlinked iteration then needs no bind of the link's root.
        bind_paths.push_back(fs::path(items[b.members.front()].folder).parent_path().string());
        for (const auto m : b.members)
            record.tasks.push_back({k - begin, p.todo[m].key(), items[m].folder, p.todo_outputs[m], std::nullopt, "", std::nullopt});
    }
    if (c.in_container) spec.binds = container_binds(bind_paths);
    record.time = utc_now_iso();
    record.executor = c.executor;
    record.log = p.log;
    record.log_name = p.name;
    record.checkpoint_root = p.run.checkpoint_root;
    record.format = p.run.format;
    record.script = script_path;
    record.job_name = spec.job_name;
    record.then_script = c.then_script;
    return job;
}

// What --dry-run shows: the sbatch command, or how the local executor would run the script.
std::string dry_run_command(const LaunchConfig& c, const ArrayJob& job) {
    const auto then = c.then_script.empty() ? "" : ", then " + shell_quote(c.then_script) + " OUTPUT";
    if (c.executor != "slurm")
        return "SLURM_ARRAY_TASK_ID=0.." + std::to_string(job.spec.inputs.size() - 1) + " bash " + shell_quote(job.record.script) + then;
    std::vector<std::string> sbatch{"sbatch", "--parsable", "--chdir=" + c.convert_logs_dir};
    for (const auto& extra : c.sbatch_args) sbatch.push_back(extra);
    sbatch.push_back(job.record.script);
    if (c.then_script.empty()) return display_command(sbatch);
    auto chained = then_dependency_args("JOB_TASK");
    chained.insert(chained.begin(), "sbatch");
    chained.push_back(c.then_script);
    chained.push_back("OUTPUT");
    return display_command(sbatch) + ", then per task: " + display_command(chained);
}

// Writes the script and submits (or runs, or shows) it. Throws m2h::Error for what stops this array.
void submit_array(const LaunchConfig& c, const LogPlan& p, ArrayJob& job, const std::string& state_path,
                  SubmissionTally& tally) {
    const auto& spec = job.spec;
    auto& record = job.record;
    write_script(record.script, render_job_script(c.tmpl.text, c.tmpl.path, spec));
    const std::string what = std::to_string(record.tasks.size()) + " iteration(s) in " + std::to_string(spec.inputs.size()) +
                             " task(s), " + std::to_string(spec.resources.ranks()) + " rank(s) each on " +
                             std::to_string(spec.resources.nodes) + " node(s)";
    if (c.dry_run) {
        spdlog::info("{}: dry run, {}: {}", p.name, what, dry_run_command(c, job));
    } else {
        const auto out_root = output_root(c.save_dir, p.name);
        std::error_code ec;
        fs::create_directories(out_root, ec);
        if (ec) throw Error(out_root, "cannot create: " + ec.message());
        if (c.executor == "slurm") {
            record.job_id = submit_sbatch(record.script, c.convert_logs_dir, c.sbatch_args);
            if (!record.then_script.empty()) submit_then_jobs(record, c.convert_logs_dir, tally.failures);
            append_record(state_path, record);
            spdlog::info("{}: submitted job array {} ({}): {}", p.name, record.job_id, what, record.script);
        } else {
            // Same script, no allocation: the script falls back to mpirun on this machine.
            record.job_id = local_job_id();
            spdlog::info("{}: running {} here ({})", p.name, what, record.script);
            run_tasks_here(record, c.convert_logs_dir, tally.failures);
            append_record(state_path, record);
        }
    }
    ++tally.logs;
    tally.tasks += record.tasks.size();
}

}  // namespace

SubmissionTally submit_arrays(const LaunchConfig& c, const std::vector<LogPlan>& work, const std::string& assets,
                              const std::string& state_path) {
    SubmissionTally tally;
    const auto max_array = static_cast<std::size_t>(c.max_array);
    for (const auto& p : work) {
        if (p.todo.empty()) continue;
        std::vector<BatchItem> items;
        std::error_code ec;
        for (std::size_t i = 0; i < p.todo.size(); ++i)
            items.push_back({fs::weakly_canonical(p.todo[i].folder, ec).string(), p.todo[i].key(), p.todo_outputs[i]});
        const auto per_task = c.iterations_per_task ? static_cast<std::size_t>(c.iterations_per_task)
                                                    : auto_iterations_per_task(p.run.model_bytes);
        const auto batches = batch_items(items, per_task);
        const std::size_t chunks = (batches.size() + max_array - 1) / max_array;
        for (std::size_t chunk = 0; chunk < chunks; ++chunk) {
            const auto script_path = (fs::path(c.convert_logs_dir) /
                                      ("convert_" + p.name + (chunks > 1 ? ".part" + std::to_string(chunk + 1) : "") + ".sbatch")).string();
            const auto begin = chunk * max_array;
            const auto end = std::min(batches.size(), begin + max_array);
            auto job = make_array_job(c, p, assets, batches, begin, end, items, script_path);  // an unbindable path stops the launch
            try {
                submit_array(c, p, job, state_path, tally);
            } catch (const Error& e) {
                ++tally.failures;
                spdlog::error("{}: {}", p.name, e.what());
            }
        }
    }
    return tally;
}

}  // namespace m2h::launch
