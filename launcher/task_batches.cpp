#include "task_batches.hpp"

#include <algorithm>
#include <filesystem>

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

constexpr std::uint64_t kBytesPerTask = 16'000'000'000ull;
constexpr std::size_t kMaxPerTask = 40;

std::string parent_of(const std::string& path) { return fs::path(path).parent_path().string(); }

bool joins(const TaskBatch& batch, const BatchItem& first, const BatchItem& item, std::size_t per_task) {
    return batch.members.size() < per_task && item.iteration != "release" && first.iteration != "release" &&
           parent_of(item.folder) == parent_of(first.folder) && parent_of(item.output) == parent_of(first.output);
}

}  // namespace

std::vector<TaskBatch> batch_items(const std::vector<BatchItem>& items, std::size_t per_task) {
    std::vector<TaskBatch> out;
    std::size_t first = 0;  // the first item of the batch being filled
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (!out.empty() && joins(out.back(), items[first], items[i], std::max<std::size_t>(per_task, 1))) {
            auto& b = out.back();
            b.members.push_back(i);
            b.input = parent_of(items[first].folder);
            b.iteration += "," + items[i].iteration;
            b.output = parent_of(items[first].output);
            continue;
        }
        first = i;
        out.push_back({items[i].folder, items[i].iteration, items[i].output, {i}});
    }
    return out;
}

std::size_t auto_iterations_per_task(std::optional<std::uint64_t> model_bytes) {
    if (!model_bytes || *model_bytes == 0) return 1;
    return std::clamp<std::size_t>(static_cast<std::size_t>(kBytesPerTask / *model_bytes), 1, kMaxPerTask);
}

}  // namespace m2h::launch
