#pragma once
// The iterations a checkpoint root holds on disk, and which of them a --iterations value asks for.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

struct Iteration {
    bool release = false;       // the `release/` folder
    std::int64_t number = 0;    // iter_%07d
    std::string folder;         // where it is on disk (a cool-down run's borrowed ones live in another root)
    bool borrowed = false;      // found beside the target of a symlinked iter_* folder
    std::string saving;         // what Megatron has yet to write when the save is in progress; empty when complete

    std::string key() const;          // "100" or "release": the engine's --iteration value
    std::string folder_name() const;  // "iter_0000100" or "release": the output folder name
};

// iter_* folders (symlinks followed) and release/ under `root`, sorted (release first, then by number). A
// symlinked iter_N also brings every iter_M with M < N beside its target: cool-down runs start from a symlink
// to the pre-cool-down checkpoint, whose earlier iterations belong to the same model history.
// Each is marked `saving` when its save has not finished (formats/save_state.hpp, with the tracker file of its
// own root). Throws m2h::Error(root, ...) when root is not a folder.
std::vector<Iteration> discover_iterations(const std::string& root);

struct IterationSelection {
    enum class Kind { All, Latest, List } kind = Kind::All;
    std::vector<std::int64_t> numbers;  // Kind::List; -1 stands for release
};

// "all", "latest", or "N[,N...]" (zero padding allowed, "release" allowed). Throws m2h::Error naming --iterations.
IterationSelection parse_iteration_selection(std::string_view text);

struct SelectedIterations {
    std::vector<Iteration> chosen;
    std::vector<std::string> not_on_disk;  // asked for by number but absent
};
SelectedIterations select_iterations(const std::vector<Iteration>& available, const IterationSelection& selection);

}  // namespace m2h::launch
