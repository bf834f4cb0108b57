#include "tensors/source_index.hpp"

#include "common/error.hpp"

namespace m2h::tensors {

std::string SourceFile::name() const {
    if (!zstd) return path;
    return path + " [zstd item at " + std::to_string(item_offset) + ", " + std::to_string(item_length) + " bytes]";
}

std::uint64_t SourceTensor::numel() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

std::uint64_t SourceTensor::nbytes() const { return numel() * dtype_size(dtype); }

nlohmann::json to_json(const SourceTensor& t) {
    return {{"key", t.key},          {"dtype", std::string(safetensors_name(t.dtype))},
            {"shape", t.shape},      {"file", t.file},
            {"offset", t.offset},    {"tp", t.tp_rank},
            {"pp", t.pp_rank},       {"ep", t.ep_rank},         {"vpp", t.vpp_chunk},
            {"goff", t.global_offset}, {"gshape", t.global_shape}};
}

SourceTensor source_tensor_from_json(const nlohmann::json& t) {
    SourceTensor s;
    s.key = t.at("key").get<std::string>();
    const auto dt = dtype_from_safetensors_name(t.at("dtype").get<std::string>());
    if (!dt) throw Error(s.key, "unknown dtype in source index");
    s.dtype = *dt;
    s.shape = t.at("shape").get<std::vector<std::uint64_t>>();
    s.file = t.at("file").get<std::uint32_t>();
    s.offset = t.at("offset").get<std::uint64_t>();
    s.tp_rank = t.at("tp").get<int>();
    s.pp_rank = t.at("pp").get<int>();
    s.ep_rank = t.value("ep", 0);
    s.vpp_chunk = t.at("vpp").get<int>();
    s.global_offset = t.at("goff").get<std::vector<std::uint64_t>>();
    s.global_shape = t.at("gshape").get<std::vector<std::uint64_t>>();
    return s;
}

nlohmann::json to_json(const SourceIndex& index) {
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : index.tensors) tensors.push_back(to_json(t));
    nlohmann::json files = nlohmann::json::array();
    for (const auto& f : index.files)
        files.push_back({{"path", f.path}, {"zstd", f.zstd}, {"offset", f.item_offset}, {"length", f.item_length}});
    return {{"format", index.format}, {"files", files},               {"tensors", tensors},
            {"args", index.args},     {"iteration", index.iteration}, {"skipped", index.skipped}};
}

SourceIndex source_index_from_json(const nlohmann::json& j) {
    SourceIndex index;
    index.format = j.at("format").get<std::string>();
    for (const auto& f : j.at("files"))
        index.files.push_back({f.at("path").get<std::string>(), f.at("zstd").get<bool>(),
                               f.at("offset").get<std::uint64_t>(), f.at("length").get<std::uint64_t>()});
    index.args = j.at("args");
    index.iteration = j.at("iteration").get<std::int64_t>();
    index.skipped = j.at("skipped").get<std::vector<std::string>>();
    for (const auto& t : j.at("tensors")) index.tensors.push_back(source_tensor_from_json(t));
    return index;
}

}  // namespace m2h::tensors
