#include "formats/save_state.hpp"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

namespace m2h::formats {
namespace fs = std::filesystem;
namespace {

// The name exists (a link that cannot be followed counts: reading it is where that error belongs).
bool present(const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));
}

// A finished zip (torch.save) ends with its end-of-central-directory record: signature PK\5\6 within the last
// 22 + 65535 bytes (the record plus the longest comment).
bool ends_with_zip_directory(const fs::path& file) {
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    if (!in) return false;
    const auto size = static_cast<std::uint64_t>(in.tellg());
    const std::uint64_t tail = std::min<std::uint64_t>(size, 22 + 65535);
    std::string bytes(tail, '\0');
    in.seekg(static_cast<std::streamoff>(size - tail));
    if (!in.read(bytes.data(), static_cast<std::streamsize>(tail))) return false;
    // The record is 22 bytes and its comment, whose length it gives, ends the file.
    for (auto at = bytes.rfind(std::string_view("PK\x05\x06", 4)); at != std::string::npos;
         at = at ? bytes.rfind(std::string_view("PK\x05\x06", 4), at - 1) : std::string::npos) {
        if (at + 22 > bytes.size()) continue;
        const auto comment = static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + 20])) |
                             static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + 21])) << 8;
        if (at + 22 + comment == bytes.size()) return true;
    }
    return false;
}

bool is_torch_dist(const fs::path& dir) {
    if (present(dir / "metadata.json") || present(dir / ".metadata") || present(dir / "common.pt")) return true;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().extension() == ".distcp") return true;
    return false;
}

}  // namespace

std::optional<std::int64_t> tracker_iteration(const std::string& root) {
    std::ifstream in(fs::path(root) / "latest_checkpointed_iteration.txt");
    std::string text;
    if (!in || !std::getline(in, text)) return std::nullopt;
    const auto first = text.find_first_not_of(" \t\r\n"), last = text.find_last_not_of(" \t\r\n");
    if (first == std::string::npos) return std::nullopt;
    std::int64_t n = 0;
    const auto* begin = text.data() + first;
    const auto* end = text.data() + last + 1;
    const auto [ptr, ec] = std::from_chars(begin, end, n);
    if (ec != std::errc() || ptr != end) return std::nullopt;
    return n;
}

SaveState save_state(const std::string& iteration_dir, std::optional<std::int64_t> iteration,
                     std::optional<std::int64_t> tracker) {
    const fs::path dir(iteration_dir);
    if (is_torch_dist(dir)) {
        // DCP's coordinator writes .metadata after every rank's .distcp files; Megatron writes metadata.json.
        if (!present(dir / ".metadata")) return {false, ".metadata (PyTorch DCP writes it when every rank has saved)"};
        if (!present(dir / "metadata.json")) return {false, "metadata.json"};
        return {};
    }
    // The tracker names the last finished save: anything at or before it is finished (damage, if any, is the
    // engine's to report).
    if (tracker && iteration && *iteration <= *tracker) return {};
    std::error_code ec;
    std::vector<fs::path> ranks;
    for (const auto& e : fs::directory_iterator(dir, ec))
        if (e.path().filename().string().starts_with("mp_rank_")) ranks.push_back(e.path());
    std::sort(ranks.begin(), ranks.end());
    for (const auto& r : ranks) {
        const auto file = r / "model_optim_rng.pt";
        if (!present(file)) return {false, (r.filename() / "model_optim_rng.pt").string()};
        if (!ends_with_zip_directory(file))
            return {false, "the end of " + (r.filename() / "model_optim_rng.pt").string() + " (its zip directory)"};
    }
    return {};
}

}  // namespace m2h::formats
