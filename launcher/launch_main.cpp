// megatron2hf-launch: training logs → one SLURM job array per log, one array task per checkpoint iteration,
// each running the megatron2hf engine under srun. Also `megatron2hf-launch watch`, `status` and `clean`.
//
// This file is the thin shell: the order of a launch's steps, and main(). The steps are in the library
// (settings, launch_config, launch_round, watch_command, status_command); what they decide with is in its pure
// parts (log_parser, iteration_discovery, job_script, status, watch), which are unit-tested.
#include <cstdio>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "launch_config.hpp"
#include "launch_round.hpp"
#include "settings.hpp"
#include "status_command.hpp"
#include "watch_command.hpp"

namespace {

using m2h::Error;
using namespace m2h::launch;

int run_launch(const Settings& s) {
    for (const char* watch_only : {"until", "as-slurm-job", "round"})
        if (s.has(watch_only) || s.flag(watch_only))
            throw Error(std::string("--") + watch_only, "is an option of `megatron2hf-launch watch`");
    const auto c = read_launch_config(s);
    const auto round = launch_round(s, c);
    log_round(c, round);
    return round.tally.failures ? 1 : 0;
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
            case Command::Watch: return run_watch(*settings);
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
