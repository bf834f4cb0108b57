#pragma once
// Reads what a Megatron-LM training log (.out) says about its run: the arguments block, the checkpoint saves,
// the parameter count. Pure functions of the log text, so they are tested without files or SLURM.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

// `saving checkpoint at iteration N to PATH in FORMAT format` (FORMAT empty for Megatron versions that omit it).
struct SaveLine {
    std::int64_t iteration = 0;
    std::string path;
    std::string format;
};

struct TrainingLog {
    std::map<std::string, std::string> args;  // the first arguments block, values as Python printed them
    bool has_args_block = false;
    std::vector<SaveLine> saves;              // in log order
    bool finished = false;                    // "[after training is done]" seen
    std::optional<double> total_params_billions;
    std::optional<std::uint64_t> padded_vocab;  // "> padded vocab (size: V) with K dummy tokens (new size: N)"
};

// Removes a `[host:rank]:` (torchrun --role/--tee) or `N: ` (srun --label) prefix.
std::string_view strip_rank_prefix(std::string_view line);

TrainingLog parse_training_log(std::string_view text);

// What the launcher needs from a log, derived from TrainingLog.
struct RunInfo {
    std::string checkpoint_root;  // as the log says; resolved against the log's folder when relative
    std::string root_source;      // "save line" or "save argument", for messages
    std::string format;           // torch, torch_dist, ... or "" when the log does not say
    int tp = 1, pp = 1, vpp = 1;
    std::optional<std::uint64_t> parameters;
    std::optional<std::uint64_t> model_bytes;  // parameters x bytes of the training dtype
};

// Throws m2h::Error(log_path, ...) when the log names no checkpoint root.
RunInfo describe_run(const TrainingLog& log, const std::string& log_path);

// Parameter count of the Hugging Face model the engine will write: the arguments block read as the engine reads
// a checkpoint's args, summed over the family's tensor table (experts included). nullopt for a model the engine
// would refuse or a block without the sizes.
std::optional<std::uint64_t> estimate_parameters(const TrainingLog& log);

}  // namespace m2h::launch
