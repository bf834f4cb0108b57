#pragma once
// From --input and --iteration to one iteration folder and its format.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace m2h::formats {

struct CheckpointLocation {
    std::string iteration_dir;             // canonical path (symlinks of cool-down runs resolved)
    std::string format;                    // "torch" or "torch_dist"
    std::optional<std::int64_t> iteration; // from the folder name; nullopt for an unnamed folder
    bool release = false;
};

// `input`: a checkpoint root (with latest_checkpointed_iteration.txt) or one iteration folder.
// `iteration`: "latest" or a number. Throws m2h::Error naming the path and what is wrong.
CheckpointLocation discover_checkpoint(const std::string& input, const std::string& iteration);

// The numbers of the iter_NNNNNNN folders in the checkpoint root `input`, ascending. Throws m2h::Error when
// `input` is not a folder.
std::vector<std::int64_t> iterations_on_disk(const std::string& input);

// "iter_0001000" for 1000.
std::string iteration_dir_name(std::int64_t iteration);

}  // namespace m2h::formats
