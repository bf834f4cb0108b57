#pragma once
// Everything a launch decides from its settings before it looks at any log: where things go, how jobs run
// (executor, template, container, MPI), their resources, and the #SBATCH values every job shares. All of it
// is checked here, so a bad option fails before any file is written.
#include <string>
#include <vector>

#include "iteration_discovery.hpp"
#include "job_script.hpp"
#include "settings.hpp"

namespace m2h::launch {

struct Template {
    std::string name;  // for messages
    std::string path;
    std::string text;
};

struct LaunchConfig {
    std::string convert_logs_dir;  // absolute
    std::string save_dir;          // absolute
    std::string logs_spec;         // --train_logs_dir_or_path as given
    bool dry_run = false;
    std::string executor;  // "slurm" or "local"
    Template tmpl;
    bool in_container = false;
    ResourceRequest request;
    int max_array = 1000;
    int iterations_per_task = 0;  // 0: auto (task_batches.hpp)
    IterationSelection selection;
    JobSpec base;  // the values every job shares; per-log and per-task ones are filled in later
    std::vector<std::string> sbatch_args;
    std::string then_script;  // --then, absolute; "" for none
    std::string model_card;   // --model-card template, absolute; "" for the engine's own
};

// Throws m2h::Error naming the option for anything missing, unknown or unsafe.
LaunchConfig read_launch_config(const Settings& s);

}  // namespace m2h::launch
