#include "pipeline/manifest.hpp"

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "common/crc32c.hpp"
#include "common/error.hpp"
#include "io/file.hpp"
#include "io/safetensors_reader.hpp"

namespace m2h::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<Segment> window_segments(const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                                     const plan::Window& window) {
    std::vector<Segment> out;
    const auto& file = layout.files.at(window.file);
    // Tensors of a file are in data order, so the window's tensors are one consecutive run.
    for (const auto t : file.tensors) {
        const auto begin = layout.placement[t].offset, end = begin + tensors[t].nbytes();
        const auto lo = std::max(begin, window.offset), hi = std::min(end, window.offset + window.size);
        if (lo < hi) out.push_back({static_cast<std::uint32_t>(t), lo - begin, hi - lo, 0});
    }
    return out;
}

std::vector<std::uint32_t> tensor_checksums(std::vector<Segment> segments, const std::vector<tensors::OutputTensor>& tensors) {
    std::sort(segments.begin(), segments.end(), [](const Segment& a, const Segment& b) {
        return a.tensor != b.tensor ? a.tensor < b.tensor : a.offset < b.offset;
    });
    std::vector<std::uint32_t> crc(tensors.size(), 0);
    std::vector<std::uint64_t> covered(tensors.size(), 0);
    for (const auto& s : segments) {
        if (s.offset != covered[s.tensor]) throw Error(tensors[s.tensor].name, "checksum segments do not tile the tensor");
        crc[s.tensor] = crc32c_combine(crc[s.tensor], s.crc, s.length);
        covered[s.tensor] += s.length;
    }
    for (std::size_t t = 0; t < tensors.size(); ++t)
        if (covered[t] != tensors[t].nbytes()) throw Error(tensors[t].name, "not every byte was checksummed");
    return crc;
}

std::string manifest_summary(const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                             const std::vector<std::uint32_t>& crcs) {
    std::uint32_t combined = 0;
    for (const auto crc : crcs) {
        const std::array<std::byte, 4> le{std::byte(crc & 0xff), std::byte((crc >> 8) & 0xff), std::byte((crc >> 16) & 0xff),
                                          std::byte(crc >> 24)};
        combined = crc32c(le, combined);
    }
    std::uint64_t bytes = 0;
    for (const auto& t : tensors) bytes += t.nbytes();
    std::string grouped = std::to_string(bytes);
    for (auto i = grouped.size(); i > 3; i -= 3) grouped.insert(i - 3, ",");
    return fmt::format("{} tensors, {} bytes in {} file{}; CRC-32C of the tensors' CRC-32Cs in order: {:08x}", tensors.size(),
                       grouped, layout.files.size(), layout.files.size() == 1 ? "" : "s", combined);
}

json make_manifest(const Provenance& p, const plan::OutputLayout& layout, const std::vector<tensors::OutputTensor>& tensors,
                   const std::vector<std::uint32_t>& crcs) {
    json files = json::object();
    json entries = json::object();
    for (const auto& f : layout.files) files[f.name] = {{"size", f.size}};
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        char hex[9];
        std::snprintf(hex, sizeof hex, "%08x", crcs[i]);
        entries[tensors[i].name] = {{"file", layout.files[layout.placement[i].file].name},
                                    {"dtype", std::string(safetensors_name(tensors[i].dtype))},
                                    {"shape", tensors[i].shape},
                                    {"crc32c", hex}};
    }
    return {{"manifest_version", 1},
            {"engine", std::string("megatron2hf ") + M2H_VERSION},
            {"source", {{"path", p.source_path}, {"iteration", p.iteration}, {"format", p.source_format}}},
            {"arguments", p.arguments},
            {"files", files},
            {"tensors", entries}};
}

VerifyResult verify_output_dir(const std::string& dir, const std::vector<std::string>& only_files) {
    const auto manifest_path = (fs::path(dir) / kManifestName).string();
    json manifest;
    try {
        manifest = json::parse(io::read_text_file(manifest_path));
    } catch (const json::exception& e) {
        throw Error(manifest_path, std::string("not a valid manifest: ") + e.what());
    }
    VerifyResult result;
    try {
        std::map<std::string, std::vector<std::string>> by_file;
        for (const auto& [name, t] : manifest.at("tensors").items()) by_file[t.at("file").get<std::string>()].push_back(name);
        for (const auto& [file_name, info] : manifest.at("files").items()) {
            if (!only_files.empty() && std::find(only_files.begin(), only_files.end(), file_name) == only_files.end())
                continue;
            if (file_name.find('/') != std::string::npos || file_name.starts_with("."))
                throw Error(manifest_path, "file name '" + file_name + "' is not a plain file name");
            const auto path = (fs::path(dir) / file_name).string();
            io::File file(path, io::File::Mode::Read);
            if (file.size() != info.at("size").get<std::uint64_t>())
                throw Error(path, "has " + std::to_string(file.size()) + " bytes but the manifest says " +
                                      info.at("size").dump());
            const auto header = io::read_safetensors_header(file);
            if (header.metadata.count("format") == 0 || header.metadata.at("format") != "pt")
                throw Error(path, "__metadata__ must be {\"format\": \"pt\"}");
            auto expected = by_file[file_name];
            if (expected.size() != header.tensors.size())
                throw Error(path, "holds " + std::to_string(header.tensors.size()) + " tensors but the manifest lists " +
                                      std::to_string(expected.size()));
            std::vector<std::byte> buffer(8u << 20);
            for (const auto& t : header.tensors) {
                const auto it = manifest["tensors"].find(t.name);
                if (it == manifest["tensors"].end() || (*it)["file"] != file_name)
                    throw Error(path + ": " + t.name, "not in the manifest for this file");
                if ((*it)["dtype"] != std::string(safetensors_name(t.dtype)) ||
                    (*it)["shape"].get<std::vector<std::uint64_t>>() != t.shape)
                    throw Error(path + ": " + t.name, "dtype or shape differs from the manifest");
                std::uint32_t crc = 0;
                for (std::uint64_t at = t.begin; at < t.end;) {
                    const auto n = std::min<std::uint64_t>(buffer.size(), t.end - at);
                    file.read_at(header.data_start() + at, std::span(buffer).first(n));
                    crc = crc32c(std::span(buffer).first(n), crc);
                    at += n;
                }
                char hex[9];
                std::snprintf(hex, sizeof hex, "%08x", crc);
                if ((*it)["crc32c"] != hex)
                    throw Error(path + ": " + t.name, "checksum " + std::string(hex) + " but the manifest says " +
                                                          (*it)["crc32c"].get<std::string>() + " (the bytes changed)");
                ++result.tensors;
                result.bytes += t.end - t.begin;
            }
        }
        // A sharded folder's index must name every tensor's file, and nothing else.
        const auto index_path = fs::path(dir) / "model.safetensors.index.json";
        if (only_files.empty() && fs::exists(index_path)) {
            const auto index = json::parse(io::read_text_file(index_path.string()));
            const auto& map = index.at("weight_map");
            if (map.size() != manifest["tensors"].size())
                throw Error(index_path.string(), "weight_map has " + std::to_string(map.size()) + " entries but " +
                                                     std::to_string(manifest["tensors"].size()) + " tensors were written");
            for (const auto& [name, t] : manifest["tensors"].items())
                if (!map.contains(name) || map[name] != t["file"])
                    throw Error(index_path.string(), "weight_map entry of " + name + " does not name " + t["file"].get<std::string>());
        }
    } catch (const json::exception& e) {
        throw Error(manifest_path, std::string("malformed manifest or index: ") + e.what());
    }
    return result;
}

}  // namespace m2h::pipeline
