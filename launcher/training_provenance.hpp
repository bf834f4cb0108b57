#pragma once
// Pure: what only a training log knows about its run, for the model card of every iteration converted from it:
// the log's name, the SLURM job that trained it, and the wall time the log spans.
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

struct TrainingProvenance {
    std::string log_name;   // the log file's name
    std::string job_id;     // from SLURM_JOB_ID printed in the log, else the file name (slurm-%j.out, %x-%j.out); "" if neither
    std::string wall_time;  // "6 h 02 min (2025-01-01 10:00:00 to 2025-01-01 16:02:10)"; "" without two timestamps
};

TrainingProvenance training_provenance(std::string_view log_text, const std::string& log_path);

// The engine arguments that hand it to the model card (--model-card-field=NAME=VALUE).
std::vector<std::string> model_card_arguments(const TrainingProvenance& provenance);

}  // namespace m2h::launch
