#include "outputs.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

namespace m2h::launch {
namespace fs = std::filesystem;
namespace {

// A safetensors file is whole when its tensors' byte ranges end exactly at the end of the file.
std::string check_safetensors(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) return file.filename().string() + " is missing";
    std::ifstream in(file, std::ios::binary);
    unsigned char len_bytes[8] = {};
    if (size < 8 || !in.read(reinterpret_cast<char*>(len_bytes), 8)) return file.filename().string() + " is truncated";
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > size - 8 || header_len > (std::uint64_t{1} << 30)) return file.filename().string() + " has a bad header length";
    std::string header(header_len, '\0');
    if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) return file.filename().string() + " is truncated";
    std::uint64_t data_end = 0;
    try {
        const auto j = nlohmann::json::parse(header);
        for (const auto& [name, t] : j.items()) {
            if (name == "__metadata__") continue;
            data_end = std::max(data_end, t.at("data_offsets").at(1).get<std::uint64_t>());
        }
    } catch (const nlohmann::json::exception&) {
        return file.filename().string() + " has an unreadable header";
    }
    if (8 + header_len + data_end != size) return file.filename().string() + " is truncated or padded";
    return "";
}

}  // namespace

std::string log_name_of(const std::string& log_path) {
    std::string name = fs::path(log_path).filename().string();
    if (name.size() > 4 && name.ends_with(".out")) name.resize(name.size() - 4);
    return name;
}

std::string output_root(const std::string& save_checkpoints_dir, const std::string& log_name) {
    return (fs::path(save_checkpoints_dir) / log_name / "hf").lexically_normal().string();
}

std::string output_dir(const std::string& save_checkpoints_dir, const std::string& log_name, const Iteration& it) {
    return (fs::path(output_root(save_checkpoints_dir, log_name)) / it.folder_name()).string();
}

OutputCheck check_output(const std::string& dir) {
    OutputCheck c;
    std::error_code ec;
    c.exists = fs::exists(dir, ec);
    if (!c.exists) {
        c.problem = "not converted";
        return c;
    }
    const fs::path d(dir);
    if (!fs::is_directory(d, ec)) {
        c.problem = "exists but is not a folder";
        return c;
    }
    if (!fs::is_regular_file(d / "config.json", ec)) {
        c.problem = "config.json is missing";
        return c;
    }
    std::set<std::string> shards;
    if (fs::exists(d / "model.safetensors.index.json", ec)) {
        try {
            std::ifstream in(d / "model.safetensors.index.json");
            const auto j = nlohmann::json::parse(in);
            for (const auto& [tensor, file] : j.at("weight_map").items()) shards.insert(file.get<std::string>());
        } catch (const nlohmann::json::exception&) {
            c.problem = "model.safetensors.index.json is unreadable";
            return c;
        }
        if (shards.empty()) {
            c.problem = "model.safetensors.index.json names no shard";
            return c;
        }
    } else {
        shards.insert("model.safetensors");
    }
    for (const auto& s : shards) {
        if (s.find('/') != std::string::npos) {
            c.problem = "the index names a shard outside the folder: " + s;
            return c;
        }
        if (auto p = check_safetensors(d / s); !p.empty()) {
            c.problem = p;
            return c;
        }
    }
    c.complete = true;
    return c;
}

std::vector<Leftover> leftover_staging(const std::string& hf_dir) {
    std::vector<Leftover> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(hf_dir, ec)) {
        auto name = e.path().filename().string();
        const bool old = name.ends_with(".m2h-partial.old");
        if (!name.starts_with(".") || !(old || name.ends_with(".m2h-partial")) || !e.is_directory(ec)) continue;
        name = name.substr(1, name.size() - 1 - (old ? 16 : 12));
        Leftover l{e.path().string(), (fs::path(hf_dir) / name).string(), 0};
        for (const auto& f : fs::recursive_directory_iterator(e.path(), ec))
            if (f.is_regular_file(ec)) l.bytes += f.file_size(ec);
        out.push_back(std::move(l));
    }
    std::sort(out.begin(), out.end(), [](const Leftover& a, const Leftover& b) { return a.path < b.path; });
    return out;
}

}  // namespace m2h::launch
