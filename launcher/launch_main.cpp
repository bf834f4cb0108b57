// megatron2hf-launch: training logs → one SLURM job array per log, one array task per checkpoint iteration,
// each running the megatron2hf engine under srun. Also `megatron2hf-launch status` and `clean`.
//
// This file is the thin shell: the order of a launch's steps, and main(). The steps are in the library
// (settings, launch_config, launch_plan, asset_staging, array_submission, status_command); what they decide
// with is in its pure parts (log_parser, iteration_discovery, job_script, status), which are unit-tested.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "array_submission.hpp"
#include "asset_staging.hpp"
#include "common/error.hpp"
#include "launch_config.hpp"
#include "launch_plan.hpp"
#include "log_selection.hpp"
#include "settings.hpp"
#include "state_file.hpp"
#include "status_command.hpp"

namespace {

namespace fs = std::filesystem;
using m2h::Error;
using namespace m2h::launch;

// The assets folder every output gets its modeling and tokenizer files from; "" without --open_sci_hf_path.
// Staged only when something is to be converted.
std::string assets_for(const Settings& s, const LaunchConfig& c, const std::vector<LogPlan>& work) {
    const bool any_work = std::any_of(work.begin(), work.end(), [](const LogPlan& p) { return !p.todo.empty(); });
    if (!any_work) return "";
    if (s.has("open_sci_hf_path")) return stage_assets(s.get("open_sci_hf_path"), c.convert_logs_dir, c.dry_run);
    spdlog::info("no --open_sci_hf_path: outputs get config.json and weights only (no modeling or tokenizer files)");
    return "";
}

int run_launch(const Settings& s) {
    const auto c = read_launch_config(s);
    const auto logs = select_logs(c.logs_spec);
    std::error_code ec;
    fs::create_directories(c.convert_logs_dir, ec);
    if (ec) throw Error(c.convert_logs_dir, "cannot create --convert_logs_dir: " + ec.message());
    const auto state_path = state_file_path(c.convert_logs_dir);
    const auto records = load_records(state_path);

    std::size_t skipped = 0;
    auto work = find_work(read_logs(logs, skipped), c.selection, c.save_dir, skipped);
    drop_in_flight(work, records);  // do not submit again what a previous launch has queued or running
    const auto assets = assets_for(s, c, work);
    const auto tally = submit_arrays(c, work, assets, state_path);

    const char* verb = c.dry_run ? "prepared" : c.executor == "slurm" ? "submitted" : "ran";
    spdlog::info("{} log(s): {} {} ({} iteration(s)), {} skipped, {} failed; scripts and job logs in {}", logs.size(), verb,
                 tally.logs, tally.tasks, skipped, tally.failures, c.convert_logs_dir);
    return tally.failures ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto logger = spdlog::stderr_color_mt(kProgram);
    logger->set_pattern("[%Y-%m-%d %H:%M:%S] [%n] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    try {
        const auto settings = parse_settings(argc, argv);
        if (!settings) return 0;
        switch (settings->command) {
            case Command::Status: return run_status(*settings);
            case Command::Clean: return run_clean(*settings);
            case Command::Launch: return run_launch(*settings);
        }
        return 2;
    } catch (const Error& e) {
        std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", kProgram, e.what());
        return 2;
    }
}
