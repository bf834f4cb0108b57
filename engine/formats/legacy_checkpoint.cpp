#include "formats/legacy_checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <tuple>

#include "common/error.hpp"
#include "formats/megatron_args.hpp"
#include "formats/torch_archive.hpp"
#include "io/byte_source.hpp"
#include "io/file.hpp"

namespace m2h::formats {
namespace fs = std::filesystem;
namespace {

bool is_extra_state(std::string_view key) {
    return key.ends_with("_extra_state") || key.find("_extra_state/") != std::string_view::npos;
}

// The args that must agree between the rank files of one checkpoint.
constexpr const char* kModelArgs[] = {
    "num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "group_query_attention", "kv_channels",
    "ffn_hidden_size", "padded_vocab_size", "tensor_model_parallel_size", "pipeline_model_parallel_size",
    "virtual_pipeline_model_parallel_size", "swiglu", "normalization", "add_bias_linear", "add_qkv_bias",
    "qk_layernorm", "untie_embeddings_and_output_weights", "bf16", "fp16", "num_experts", "expert_model_parallel_size",
    "moe_ffn_hidden_size", "moe_shared_expert_intermediate_size"};

}  // namespace

std::vector<LegacyRankFile> list_legacy_rank_files(const std::string& iteration_dir) {
    // mp_rank_TT, mp_rank_TT_PPP, with the _dp_000 aliases some converters probe; a third number is EP.
    static const std::regex name(R"(mp_rank_(\d+)(?:_(\d+))?(?:_(\d+))?(?:_dp_000)?)");
    std::vector<LegacyRankFile> files;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(iteration_dir, ec)) {
        const auto dir = e.path().filename().string();
        std::smatch m;
        if (!std::regex_match(dir, m, name)) continue;
        std::error_code dec;
        if (!e.is_directory(dec)) {
            if (dec && dec != std::errc::no_such_file_or_directory)
                throw Error(e.path().string(), "cannot access: " + dec.message());
            continue;
        }
        const auto path = (e.path() / "model_optim_rng.pt").string();
        if (!io::path_exists(path)) throw Error(path, "missing rank file (the mp_rank folder has no model_optim_rng.pt)");
        files.push_back({path, std::stoi(m[1].str()), m[2].matched ? std::stoi(m[2].str()) : 0,
                         m[3].matched ? std::stoi(m[3].str()) : 0, m[3].matched ? 3 : m[2].matched ? 2 : 1});
    }
    if (ec) throw Error(iteration_dir, "cannot list: " + ec.message());
    if (files.empty()) throw Error(iteration_dir, "no mp_rank_*/model_optim_rng.pt files");
    const auto rank = [](const LegacyRankFile& f) { return std::tuple(f.pp, f.tp, f.ep); };
    std::sort(files.begin(), files.end(), [&](const auto& a, const auto& b) {
        return rank(a) != rank(b) ? rank(a) < rank(b) : a.path < b.path;
    });
    // mp_rank_00_000 next to its alias mp_rank_00_000_dp_000 (or mp_rank_00 next to mp_rank_00_000): one rank twice.
    for (std::size_t i = 1; i < files.size(); ++i)
        if (rank(files[i]) == rank(files[i - 1]))
            throw Error(files[i].path, "duplicate rank file: tp " + std::to_string(files[i].tp) + ", pp " +
                                           std::to_string(files[i].pp) +
                                           (files[i].numbers == 3 ? ", ep " + std::to_string(files[i].ep) : "") +
                                           " is also " + files[i - 1].path);
    return files;
}

tensors::SourceIndex index_legacy_rank_file(const LegacyRankFile& file, std::uint32_t file_index) {
    io::File f(file.path, io::File::Mode::Read);
    io::FileRegion region(f);
    TorchArchive archive(region);
    const auto root = archive.load();
    if (!root || !root->is<pickle::Dict>())
        throw Error(file.path, "the checkpoint is a " + std::string(root ? root->kind() : "nothing") +
                                   ", expected a dict with args and model");
    tensors::SourceIndex index;
    index.format = "torch";
    const auto args = pickle::get(*root, "args");
    if (!args) throw Error(file.path, "no `args` entry (not a Megatron checkpoint, or saved with --no-save-args?)");
    index.args = args_to_json(*args, file.path);
    if (const auto it = pickle::get(*root, "iteration"); it && it->is<std::int64_t>())
        index.iteration = *it->as<std::int64_t>();
    if (const auto v = pickle::get(*root, "checkpoint_version")) {
        const double version = v->is<double>() ? *v->as<double>() : v->is<std::int64_t>() ? double(*v->as<std::int64_t>()) : 0;
        if (version < 2.0) throw Error(file.path, "checkpoint_version " + std::to_string(version) +
                                                      " is older than 2.0 (old QKV ordering is not supported)");
    }
    if (pickle::get(*root, "language_model"))
        throw Error(file.path, "legacy non-mcore checkpoint (language_model.*) is not supported");

    // `model`, or `model0`, `model1`, ... with virtual pipeline parallelism.
    std::vector<std::pair<int, pickle::ValuePtr>> chunks;
    for (const auto& [k, v] : root->as<pickle::Dict>()->items) {
        const auto* key = k ? k->as<std::string>() : nullptr;
        if (!key || !key->starts_with("model")) continue;
        const auto rest = key->substr(5);
        if (rest.empty())
            chunks.emplace_back(-1, v);
        else if (std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; }) && rest.size() < 6)
            chunks.emplace_back(std::stoi(rest), v);
    }
    if (chunks.empty()) throw Error(file.path, "no `model` entry (saved without model weights?)");

    for (const auto& [chunk, model] : chunks) {
        const auto* dict = model ? model->as<pickle::Dict>() : nullptr;
        if (!dict) throw Error(file.path, "`model` is a " + std::string(model ? model->kind() : "nothing") + ", expected a state dict");
        for (const auto& [k, v] : dict->items) {
            const auto* key = k ? k->as<std::string>() : nullptr;
            if (!key) throw Error(file.path, "a model state-dict key is not a string");
            if (is_extra_state(*key)) {
                index.skipped.push_back(*key);
                continue;
            }
            const auto* tensor = v ? v->as<pickle::TensorRef>() : nullptr;
            if (!tensor) {
                const auto* obj = v ? v->as<pickle::Object>() : nullptr;
                throw Error(file.path + ": " + *key,
                            "expected a tensor, found " +
                                (obj ? "an object built by " + obj->cls.qualified() : std::string(v ? v->kind() : "nothing")));
            }
            const auto loc = archive.tensor_location(*tensor, *key);
            tensors::SourceTensor t;
            t.key = *key;
            t.dtype = tensor->dtype;
            t.shape = tensor->size;
            t.file = file_index;
            t.offset = *region.file_offset(loc.offset);
            t.tp_rank = file.tp;
            t.pp_rank = file.pp;
            t.ep_rank = file.ep;
            t.vpp_chunk = chunk;
            index.tensors.push_back(std::move(t));
        }
    }
    return index;
}

namespace {

// The folder name of a rank, as Megatron's get_checkpoint_name writes it.
std::string rank_folder(int t, int s, int e, int pp, int ep) {
    char name[64];
    const int n = pp > 1 && ep > 1 ? std::snprintf(name, sizeof name, "mp_rank_%02d_%03d_%03d", t, s, e)
                  : pp > 1         ? std::snprintf(name, sizeof name, "mp_rank_%02d_%03d", t, s)
                  : ep > 1         ? std::snprintf(name, sizeof name, "mp_rank_%02d_%03d", t, e)
                                   : std::snprintf(name, sizeof name, "mp_rank_%02d", t);
    return std::string(name, static_cast<std::size_t>(n));
}

}  // namespace

tensors::SourceIndex merge_legacy_indexes(std::vector<LegacyRankFile> files, std::vector<tensors::SourceIndex> parts) {
    if (files.empty() || parts.size() != files.size()) throw Error("index", "rank files and indexes disagree");
    tensors::SourceIndex index;
    index.format = "torch";
    index.args = parts.front().args;
    index.iteration = parts.front().iteration;
    for (const auto& f : files) index.files.push_back({f.path});

    auto size_arg = [&](const char* name) {
        const auto it = index.args.find(name);
        return it != index.args.end() && it->is_number_integer() ? it->get<int>() : 1;
    };
    const int tp = size_arg("tensor_model_parallel_size"), pp = size_arg("pipeline_model_parallel_size");
    const int ep = size_arg("expert_model_parallel_size");
    for (std::size_t i = 0; i < files.size(); ++i) {
        auto& f = files[i];
        if (pp == 1 && ep > 1 && f.numbers == 2) std::swap(f.pp, f.ep);  // mp_rank_TT_EEE
        for (auto& t : parts[i].tensors) {
            t.pp_rank = f.pp;
            t.ep_rank = f.ep;
        }
    }
    std::map<std::tuple<int, int, int>, std::string> present;
    for (const auto& f : files) {
        const bool expert_grid = ep > 1 || f.ep > 0;
        if (f.tp >= tp || f.pp >= pp || f.ep >= ep)
            throw Error(f.path, "rank (tp " + std::to_string(f.tp) + ", pp " + std::to_string(f.pp) +
                                    (expert_grid ? ", ep " + std::to_string(f.ep) : "") + ") is outside the TP " +
                                    std::to_string(tp) + " x PP " + std::to_string(pp) +
                                    (expert_grid ? " x EP " + std::to_string(ep) : "") + " grid of the saved args");
        if (!present.emplace(std::tuple(f.tp, f.pp, f.ep), f.path).second)
            throw Error(f.path, "duplicate rank file: also " + present[{f.tp, f.pp, f.ep}]);
    }
    const auto dir = fs::path(files.front().path).parent_path().parent_path();
    for (int s = 0; s < pp; ++s)
        for (int t = 0; t < tp; ++t)
            for (int e = 0; e < ep; ++e)
                if (!present.count({t, s, e}))
                    throw Error((dir / rank_folder(t, s, e, pp, ep) / "model_optim_rng.pt").string(),
                                "missing rank file (TP " + std::to_string(tp) + " x PP " + std::to_string(pp) +
                                    (ep > 1 ? " x EP " + std::to_string(ep) : std::string()) + " checkpoint)");

    for (std::size_t i = 0; i < parts.size(); ++i) {
        for (const char* name : kModelArgs) {
            const auto a = index.args.find(name), b = parts[i].args.find(name);
            const bool in_a = a != index.args.end(), in_b = b != parts[i].args.end();
            if (in_a != in_b || (in_a && *a != *b))
                throw Error(files[i].path, std::string("args.") + name + " is " + (in_b ? b->dump() : "absent") +
                                               " but " + (in_a ? a->dump() : "absent") + " in " + files[0].path);
        }
        for (auto& t : parts[i].tensors) index.tensors.push_back(std::move(t));
        for (auto& k : parts[i].skipped) index.skipped.push_back(std::move(k));
    }
    return index;
}

}  // namespace m2h::formats
