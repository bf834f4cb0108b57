#include "launch_round.hpp"

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "asset_staging.hpp"
#include "common/error.hpp"
#include "log_selection.hpp"
#include "state_file.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

// The assets folder every output gets its modeling and tokenizer files from; "" without --open_sci_hf_path.
// Staged only when something is to be converted.
std::string assets_for(const Settings& s, const LaunchConfig& c, const std::vector<LogPlan>& work) {
    const bool any_work = std::any_of(work.begin(), work.end(), [](const LogPlan& p) { return !p.todo.empty(); });
    if (!any_work) return "";
    if (s.has("open_sci_hf_path")) return stage_assets(s.get("open_sci_hf_path"), c.convert_logs_dir, c.dry_run);
    spdlog::info("no --open_sci_hf_path: outputs get config.json and weights only (no modeling or tokenizer files)");
    return "";
}

}  // namespace

RoundResult launch_round(const Settings& s, const LaunchConfig& c, int max_attempts) {
    RoundResult r;
    const auto logs = select_logs(c.logs_spec);
    r.logs = logs.size();
    std::error_code ec;
    fs::create_directories(c.convert_logs_dir, ec);
    if (ec) throw Error(c.convert_logs_dir, "cannot create --convert_logs_dir: " + ec.message());
    const auto state_path = state_file_path(c.convert_logs_dir);
    const auto records = load_records(state_path);

    r.runs = read_logs(logs, r.skipped);
    r.work = find_work(r.runs, c.selection, c.save_dir, r.skipped);
    drop_in_flight(r.work, records);  // do not submit again what a previous launch has queued or running
    if (max_attempts > 0) drop_exhausted(r.work, records, static_cast<std::size_t>(max_attempts));
    const auto assets = assets_for(s, c, r.work);
    r.tally = submit_arrays(c, r.work, assets, state_path);
    return r;
}

void log_round(const LaunchConfig& c, const RoundResult& r) {
    const char* verb = c.dry_run ? "prepared" : c.executor == "slurm" ? "submitted" : "ran";
    spdlog::info("{} log(s): {} {} ({} iteration(s)), {} skipped, {} failed; scripts and job logs in {}", r.logs, verb,
                 r.tally.logs, r.tally.tasks, r.skipped, r.tally.failures, c.convert_logs_dir);
}

}  // namespace m2h::launch
