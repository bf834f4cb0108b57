#pragma once
// Whether Megatron has finished writing an iteration folder, from what a save writes last: PyTorch DCP's
// `.metadata` (torch_dist), and for legacy rank files the zip directory at each file's end or a tracker file that
// already names this iteration or a later one. Used by the engine (an unfinished save is "save in progress", not a
// damaged file) and by the launcher (such an iteration is `saving`: nothing is submitted for it yet).
#include <cstdint>
#include <optional>
#include <string>

namespace m2h::formats {

struct SaveState {
    bool complete = true;
    std::string missing;  // what the save has yet to write, when not complete
};

// `tracker`: the iteration latest_checkpointed_iteration.txt names (nullopt: no tracker, or `release`).
SaveState save_state(const std::string& iteration_dir, std::optional<std::int64_t> iteration,
                     std::optional<std::int64_t> tracker);

// The tracker file of the checkpoint root `root`, as an iteration (nullopt without one, or for `release`).
std::optional<std::int64_t> tracker_iteration(const std::string& root);

}  // namespace m2h::formats
