#pragma once
// The job arrays of a launch: one per log (split where it has more iterations than --max-array-size), each
// written as a job script, then submitted to SLURM, run here, or only shown (--dry-run), and recorded in the
// state file.
#include <cstddef>
#include <string>
#include <vector>

#include "launch_config.hpp"
#include "launch_plan.hpp"

namespace m2h::launch {

struct SubmissionTally {
    std::size_t logs = 0;   // arrays submitted, run or prepared
    std::size_t tasks = 0;  // their iterations
    std::size_t failures = 0;
};

// Submits each plan's `todo`. A failing array is logged and counted, and the others still go.
SubmissionTally submit_arrays(const LaunchConfig& c, const std::vector<LogPlan>& work, const std::string& assets,
                              const std::string& state_path);

}  // namespace m2h::launch
