#pragma once
// Where each converted iteration goes, and whether it is already there.
#include <cstdint>
#include <string>
#include <vector>

#include "iteration_discovery.hpp"

namespace m2h::launch {

// Basename with one trailing ".out" removed (only a suffix: `rollout_x.out` stays `rollout_x`).
std::string log_name_of(const std::string& log_path);

// <save_checkpoints_dir>/<log name>/hf, the folder holding one iter_%07d/ per converted iteration.
std::string output_root(const std::string& save_checkpoints_dir, const std::string& log_name);
std::string output_dir(const std::string& save_checkpoints_dir, const std::string& log_name, const Iteration& it);

struct OutputCheck {
    bool complete = false;
    bool exists = false;
    std::string problem;  // why it is not complete
};

// Complete means: config.json, and model.safetensors (or the index and every shard it names), each with a
// header whose tensor offsets end exactly at the file's end. The engine renames a finished folder into place,
// so a folder from it is complete; this also rejects truncated or hand-made folders.
OutputCheck check_output(const std::string& dir);

// What a killed conversion (SIGKILL, a failed node) leaves beside the outputs in `hf_dir`: the engine's hidden
// staging folders `.iter_NNNNNNN.m2h-partial` (and `.old`, an output being replaced), with their sizes.
struct Leftover {
    std::string path;
    std::string output;  // the output folder it was to become
    std::uint64_t bytes = 0;
};
std::vector<Leftover> leftover_staging(const std::string& hf_dir);

}  // namespace m2h::launch
