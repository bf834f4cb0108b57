#pragma once
// What to convert for each training log: its checkpoint folder, the iterations selected there, and which of
// them are converted already, being saved, or queued or running from an earlier launch.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "iteration_discovery.hpp"
#include "log_parser.hpp"
#include "state_file.hpp"
#include "training_provenance.hpp"

namespace m2h::launch {

struct LogPlan {
    std::string log;  // absolute
    std::string name;
    RunInfo run;
    TrainingProvenance provenance;  // for the model card
    bool finished = false;
    std::string canonical_root;
    std::vector<Iteration> todo;
    std::vector<std::string> todo_outputs;
    std::size_t done = 0, in_flight = 0, saving = 0;
    std::size_t given_up = 0;  // submitted max_attempts times and still not converted (watch mode)
};

// nullopt (with a warning) for a log that cannot be read or does not name a checkpoint folder.
std::optional<LogPlan> read_log(const std::string& log_path);

// Reads every log and keeps one per checkpoint folder. `skipped` counts the unreadable ones.
std::vector<LogPlan> read_logs(const std::vector<std::string>& logs, std::size_t& skipped);

// The selected iterations of each plan's checkpoint folder that are neither converted nor being saved, in
// `todo`. A folder that cannot be listed drops its plan and counts in `skipped`.
std::vector<LogPlan> find_work(std::vector<LogPlan> plans, const IterationSelection& selection, const std::string& save_dir,
                               std::size_t& skipped);

// Removes from `todo` what a previous launch has queued or running (asking SLURM), and logs each plan's summary.
void drop_in_flight(std::vector<LogPlan>& work, const std::vector<SubmissionRecord>& records);

// Removes from `todo` what has been submitted `max_attempts` times already (counting the state file's records),
// counting it in `given_up` with an error: a conversion that keeps failing is not resubmitted for ever.
void drop_exhausted(std::vector<LogPlan>& work, const std::vector<SubmissionRecord>& records, std::size_t max_attempts);

}  // namespace m2h::launch
