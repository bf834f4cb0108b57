#include "formats/checkpoint_discovery.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "common/error.hpp"
#include "formats/save_state.hpp"
#include "io/file.hpp"

namespace m2h::formats {
namespace fs = std::filesystem;
namespace {

constexpr const char* kTracker = "latest_checkpointed_iteration.txt";

std::optional<std::int64_t> parse_iteration(std::string_view text) {
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
    std::int64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc() || end != text.data() + text.size() || n < 0 || text.empty()) return std::nullopt;
    return n;
}

std::string available_iterations(const fs::path& root) {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const auto n = e.path().filename().string();
        if (n.starts_with("iter_") || n == "release") names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    if (names.empty()) return "none";
    std::string out;
    for (std::size_t i = 0; i < names.size() && i < 8; ++i) out += (i ? ", " : "") + names[i];
    if (names.size() > 8) out += ", ... (" + std::to_string(names.size()) + " in all)";
    return out;
}

bool has_rank_dirs(const fs::path& dir) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().filename().string().starts_with("mp_rank_")) return true;
    return false;
}

std::string detect_format(const fs::path& dir) {
    const auto meta = dir / "metadata.json";
    if (io::path_exists(meta.string())) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(io::read_text_file(meta.string()));
        } catch (const nlohmann::json::exception& e) {
            throw Error(meta.string(), std::string("not valid JSON: ") + e.what());
        }
        const auto backend = j.value("sharded_backend", std::string());
        if (backend == "torch_dist") return "torch_dist";
        throw Error(meta.string(), "unsupported sharded_backend '" + backend + "' (only torch_dist and torch)");
    }
    if (has_rank_dirs(dir)) return "torch";
    throw Error(dir.string(), "not a Megatron checkpoint iteration (no mp_rank_*/ folders and no metadata.json)");
}

}  // namespace

std::vector<std::int64_t> iterations_on_disk(const std::string& input) {
    std::error_code ec;
    if (!fs::is_directory(input, ec)) throw Error(input, "is not a folder (expected a checkpoint root)");
    std::vector<std::int64_t> out;
    for (const auto& e : fs::directory_iterator(input, ec)) {
        const auto name = e.path().filename().string();
        if (!name.starts_with("iter_") || !fs::is_directory(e.path(), ec)) continue;
        if (const auto n = parse_iteration(std::string_view(name).substr(5))) out.push_back(*n);
    }
    if (ec) throw Error(input, "cannot list: " + ec.message());
    std::sort(out.begin(), out.end());
    return out;
}

std::string iteration_dir_name(std::int64_t iteration) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "iter_%07lld", static_cast<long long>(iteration));
    return buf;
}

CheckpointLocation discover_checkpoint(const std::string& input, const std::string& iteration) {
    std::error_code ec;
    if (!fs::exists(input, ec)) throw Error(input, "does not exist");
    if (!fs::is_directory(input, ec)) throw Error(input, "is not a folder (expected a checkpoint root or iter_* folder)");
    const fs::path in = fs::canonical(input);
    std::optional<std::int64_t> wanted;
    if (iteration != "latest") {
        wanted = parse_iteration(iteration);
        if (!wanted) throw Error("--iteration", "expected 'latest' or a non-negative number, got '" + iteration + "'");
    }

    CheckpointLocation loc;
    fs::path dir;
    if (io::path_exists((in / kTracker).string())) {
        if (wanted) {
            dir = in / iteration_dir_name(*wanted);
            loc.iteration = wanted;
        } else {
            const auto tracker = (in / kTracker).string();
            const auto text = io::read_text_file(tracker);
            if (text.find("release") != std::string::npos) {
                dir = in / "release";
                loc.release = true;
                loc.iteration = 0;
            } else {
                loc.iteration = parse_iteration(text);
                if (!loc.iteration) throw Error(tracker, "does not hold an iteration number or 'release'");
                dir = in / iteration_dir_name(*loc.iteration);
            }
        }
        if (!fs::is_directory(dir, ec))
            throw Error(dir.string(), "iteration folder not found (available: " + available_iterations(in) + ")");
    } else {
        static const std::regex iter_name(R"(iter_(\d+))");
        std::smatch m;
        const auto name = in.filename().string();
        if (std::regex_match(name, m, iter_name)) {
            loc.iteration = parse_iteration(m[1].str());
        } else if (name == "release") {
            loc.release = true;
            loc.iteration = 0;
        } else if (!has_rank_dirs(in) && !io::path_exists((in / "metadata.json").string())) {
            throw Error(in.string(), "not a Megatron checkpoint: no " + std::string(kTracker) +
                                         ", no iter_*/ and no mp_rank_*/ folders (available: " +
                                         available_iterations(in) + ")");
        }
        if (wanted && loc.iteration && *wanted != *loc.iteration)
            throw Error(in.string(), "is iteration " + std::to_string(*loc.iteration) + " but --iteration " +
                                         std::to_string(*wanted) + " was asked for");
        dir = in;
    }
    loc.iteration_dir = fs::canonical(dir).string();
    // The root is `in` with a tracker file, else the folder above the iteration.
    const auto root = io::path_exists((in / kTracker).string()) ? in : fs::path(loc.iteration_dir).parent_path();
    if (const auto state = save_state(loc.iteration_dir, loc.iteration, tracker_iteration(root.string())); !state.complete)
        throw Error(loc.iteration_dir, "save in progress: Megatron has not written " + state.missing +
                                           " yet; convert it once the save has finished");
    loc.format = detect_format(loc.iteration_dir);
    return loc;
}

}  // namespace m2h::formats
