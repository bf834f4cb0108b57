#pragma once
// Several iterations per array task (--iterations-per-task): one engine run converts them one after another
// (`--iteration N,M,...`), so SLURM's task start, srun/MPI start-up and the process are paid once per batch.
// Pure: what to batch is decided from the iterations' folders and the model's size.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace m2h::launch {

// One array task: what the job script gives the engine, and which iterations (indices into the plan's todo).
struct TaskBatch {
    std::string input;      // an iteration folder (one iteration), or the checkpoint root the iterations share
    std::string iteration;  // "100", "release", or "100,200,300"
    std::string output;     // that iteration's HF folder, or the hf/ folder that gets iter_NNNNNNN/ per iteration
    std::vector<std::size_t> members;
};

// One iteration to batch: its real (symlink-resolved) folder, its --iteration value and its output folder.
struct BatchItem {
    std::string folder;
    std::string iteration;
    std::string output;
};

// Consecutive items go together, up to `per_task`, as long as they share their checkpoint root (a cool-down run
// borrows iterations from another root) and their outputs share a folder; release/ always goes alone.
std::vector<TaskBatch> batch_items(const std::vector<BatchItem>& items, std::size_t per_task);

// --iterations-per-task auto: as many as keep a task near 16 GB of checkpoints (0.4 GB: 40, 2 GB: 8, 16 GB and
// more: 1), at most 40; 1 when the model's size is unknown.
std::size_t auto_iterations_per_task(std::optional<std::uint64_t> model_bytes);

}  // namespace m2h::launch
