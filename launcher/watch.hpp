#pragma once
// Watch mode's decisions, as pure functions: intervals and deadlines, the training job a log belongs to,
// whether its training has ended, when the watch is over, and the job script of a self-resubmitting watch.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

// "90", "90s", "10m", "2h", "1d" → seconds (at least 1). Throws m2h::Error naming `option`.
std::int64_t parse_duration_s(std::string_view text, const std::string& option);

// --until: a time as sbatch --begin writes one, "YYYY-MM-DDTHH:MM[:SS]" (local time), or a duration from `now`
// ("12h"). Returns Unix seconds. Throws m2h::Error.
std::int64_t parse_until(std::string_view text, std::int64_t now);
std::string format_local_time(std::int64_t unix_s);  // "YYYY-MM-DDTHH:MM:SS", what parse_until reads back

// The SLURM job id at the end of a log name as `#SBATCH --output=%x_%j.out`, `%x-%j.out` or `slurm-%j.out`
// write it ("opensci_1234567" → "1234567"); nullopt for a name without one.
std::optional<std::string> training_job_of(std::string_view log_name);

// What the watcher can see of a training run.
struct TrainingObservation {
    bool end_line = false;                 // the log has "[after training is done]"
    std::optional<std::string> job_id;     // from the log name
    bool slurm_answered = false;           // squeue could be asked
    std::optional<std::string> job_state;  // the job's SLURM state, when SLURM still knows the job
    std::int64_t log_quiet_s = 0;          // seconds since the log last changed
};

struct TrainingState {
    bool ended = false;
    std::string why;
};

// Megatron prints the end-of-training line before its last evaluation and final save, so the line alone does
// not end a run: where SLURM knows the training job, the job's end does; otherwise the line and a log quiet
// for `grace_s`.
TrainingState training_state(const TrainingObservation& o, std::int64_t grace_s);

// One watched run after a round: is its training over, and is anything of it still to come?
struct RunProgress {
    std::string name;
    TrainingState training;
    std::size_t pending = 0;  // submitted and not finished, being saved, or still to submit
};

struct WatchVerdict {
    bool done = false;
    std::string why;
};

// Done when every run's training has ended and nothing of it is pending, or when `now` reaches `until`.
WatchVerdict watch_verdict(const std::vector<RunProgress>& runs, std::int64_t now, std::optional<std::int64_t> until);

// `args` without every occurrence of --name (and its value, when `takes_value`), in both "--name V" and
// "--name=V" spellings.
std::vector<std::string> without_option(const std::vector<std::string>& args, std::string_view name, bool takes_value);

// The job that runs one round of the watch and resubmits itself: unique per --convert_logs_dir (so that
// --dependency=singleton keeps one watcher per folder and user).
std::string watch_job_name(std::string_view convert_logs_dir);

struct WatchJobSpec {
    std::string job_name, account, partition, qos;
    std::string cwd;                // where the user started the watch: relative arguments stay valid
    std::string launcher;           // this program
    std::vector<std::string> args;  // the watch's arguments, ending with --round SCRIPT
    std::string generator;
};

// The script: one task, one CPU, a short time limit. Throws m2h::Error for an unsafe #SBATCH value.
std::string render_watch_script(const WatchJobSpec& spec);

}  // namespace m2h::launch
