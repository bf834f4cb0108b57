#include "asset_staging.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "local_files.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

bool is_asset_name(const std::string& n) {
    return (n.starts_with("modeling_") && n.ends_with(".py")) || (n.starts_with("configuration_") && n.ends_with(".py")) ||
           n.starts_with("tokenizer") || n == "special_tokens_map.json" || n == "vocab.json";
}

// The asset files of the folder, sorted so that the content hash does not depend on listing order.
std::vector<fs::path> asset_files(const fs::path& src) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(src, ec))
        if (e.is_regular_file(ec) && is_asset_name(e.path().filename().string())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw Error(src.string(), "no modeling_*.py, configuration_*.py or tokenizer files to copy into the outputs");
    return files;
}

// 16 hex digits of FNV-1a over names and contents: the same files always stage into the same folder.
std::string content_hash(const std::vector<fs::path>& files) {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over names and contents
    const auto mix = [&](std::string_view bytes) {
        for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
    };
    for (const auto& f : files) {
        mix(f.filename().string());
        mix(std::string(1, '\0'));
        mix(read_file(f.string(), "an asset"));
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    return hex;
}

// Copies into a private folder first and renames it into place, so no job ever sees a partly staged folder.
void copy_into_place(const std::vector<fs::path>& files, const fs::path& tmp, const fs::path& dest) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) throw Error(tmp.string(), "cannot create: " + ec.message());
    for (const auto& f : files) {
        fs::copy_file(f, tmp / f.filename(), ec);
        if (ec) throw Error(f.string(), "cannot copy into " + tmp.string() + ": " + ec.message());
    }
    fs::rename(tmp, dest, ec);
    if (ec) {
        fs::remove_all(tmp, ec);  // another launcher staged the same content first
        if (!fs::is_directory(dest)) throw Error(dest.string(), "cannot create the assets folder");
    }
}

}  // namespace

// A folder that is never modified after creation can be read by running jobs while a later launch stages
// different files.
std::string stage_assets(const std::string& open_sci_hf_path, const std::string& convert_logs_dir, bool dry_run) {
    std::error_code ec;
    const fs::path src = fs::is_directory(fs::path(open_sci_hf_path) / "sample", ec) ? fs::path(open_sci_hf_path) / "sample"
                                                                                     : fs::path(open_sci_hf_path);
    if (!fs::is_directory(src, ec)) throw Error(open_sci_hf_path, "--open_sci_hf_path is not a folder");
    const auto files = asset_files(src);
    const auto hex = content_hash(files);
    const fs::path dest = fs::path(convert_logs_dir) / ("assets-" + hex);
    if (dry_run || fs::is_directory(dest, ec)) return dest.string();
    copy_into_place(files, fs::path(convert_logs_dir) / (".assets-" + hex + ".tmp-" + std::to_string(::getpid())), dest);
    return dest.string();
}

}  // namespace m2h::launch
