#pragma once
// One launch: read the logs, find what is still to convert, leave out what is queued, running or (in watch
// mode) given up on, stage the assets and submit. `megatron2hf-launch` runs one; `watch` runs one per interval.
#include <cstddef>
#include <vector>

#include "array_submission.hpp"
#include "launch_config.hpp"
#include "launch_plan.hpp"
#include "settings.hpp"

namespace m2h::launch {

struct RoundResult {
    std::vector<LogPlan> runs;  // every log read, one per checkpoint folder, whether or not the folder exists yet
    std::vector<LogPlan> work;  // those whose folder could be listed, with what this round did not submit counted
    SubmissionTally tally;
    std::size_t logs = 0, skipped = 0;
};

// `max_attempts` > 0: an output submitted that many times already is not submitted again (watch mode, so that
// a conversion that keeps failing is not resubmitted every interval).
RoundResult launch_round(const Settings& s, const LaunchConfig& c, int max_attempts = 0);

// The one-line summary of a round.
void log_round(const LaunchConfig& c, const RoundResult& r);

}  // namespace m2h::launch
