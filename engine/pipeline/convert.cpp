#include "pipeline/convert.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "exchange/transfer_executor.hpp"
#include "formats/checkpoint_discovery.hpp"
#include "formats/legacy_checkpoint.hpp"
#include "formats/torch_dist_checkpoint.hpp"
#include "io/file.hpp"
#include "io/process_io.hpp"
#include "io/staging_dir.hpp"
#include "model/hf_config.hpp"
#include "model/model_spec.hpp"
#include "model/tensor_mapping.hpp"
#include "plan/conversion_plan.hpp"

namespace m2h::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using exchange::collective;
using exchange::Comm;

namespace {

using Clock = std::chrono::steady_clock;

// Runs `produce` on rank 0 only and hands its result to every rank.
json from_root(const Comm& comm, const std::function<json()>& produce) {
    json result;
    collective(comm, [&] {
        if (comm.rank() == 0) result = produce();
    });
    std::vector<std::byte> bytes;
    if (comm.rank() == 0) {
        const auto cbor = json::to_cbor(result);
        bytes.assign(reinterpret_cast<const std::byte*>(cbor.data()),
                     reinterpret_cast<const std::byte*>(cbor.data()) + cbor.size());
    }
    comm.broadcast(bytes, 0);
    if (comm.rank() != 0) result = json::from_cbor(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                                   reinterpret_cast<const std::uint8_t*>(bytes.data()) + bytes.size());
    return result;
}

std::vector<std::byte> to_bytes(const json& j) {
    const auto cbor = json::to_cbor(j);
    return {reinterpret_cast<const std::byte*>(cbor.data()), reinterpret_cast<const std::byte*>(cbor.data()) + cbor.size()};
}

json from_bytes(const std::vector<std::byte>& b) {
    return json::from_cbor(reinterpret_cast<const std::uint8_t*>(b.data()),
                           reinterpret_cast<const std::uint8_t*>(b.data()) + b.size());
}

// Each rank indexes every size-th rank file; the parts are gathered and merged identically everywhere.
plan::SourceIndex index_legacy(const Comm& comm, const std::string& iteration_dir) {
    const json listing = from_root(comm, [&] {
        json files = json::array();
        for (const auto& f : formats::list_legacy_rank_files(iteration_dir))
            files.push_back({{"path", f.path}, {"tp", f.tp}, {"pp", f.pp}});
        return files;
    });
    std::vector<formats::LegacyRankFile> files;
    for (const auto& f : listing) files.push_back({f["path"], f["tp"], f["pp"]});

    json mine = json::array();
    collective(comm, [&] {
        for (std::size_t i = static_cast<std::size_t>(comm.rank()); i < files.size(); i += static_cast<std::size_t>(comm.size()))
            mine.push_back({{"i", i}, {"index", plan::to_json(formats::index_legacy_rank_file(files[i], static_cast<std::uint32_t>(i)))}});
    });
    std::vector<plan::SourceIndex> parts(files.size());
    for (const auto& bytes : comm.all_gather(to_bytes(mine)))
        for (const auto& part : from_bytes(bytes)) parts[part["i"].get<std::size_t>()] = plan::source_index_from_json(part["index"]);
    plan::SourceIndex index;
    collective(comm, [&] { index = formats::merge_legacy_indexes(files, std::move(parts)); });
    return index;
}

// Every rank parses .metadata (one file); the model chunks' embedded archives are indexed rank-strided and gathered.
plan::SourceIndex index_torch_dist(const Comm& comm, const std::string& dir) {
    formats::DcpMetadata metadata;
    collective(comm, [&] { metadata = formats::read_dcp_metadata(dir); });
    const auto chunks = formats::model_chunks(metadata);
    plan::SourceIndex index;
    index.format = "torch_dist";
    // Plain items are read in place from their data file; a zstd item is a source of its own.
    std::map<std::pair<std::string, std::uint64_t>, std::uint32_t> file_index;
    auto file_key = [](const formats::DcpStorage& st) {
        return std::pair{st.relative_path, st.transforms.empty() ? ~std::uint64_t{0} : st.offset};
    };
    for (const auto& [t, c] : chunks) {
        auto [it, added] = file_index.emplace(file_key(c->storage), static_cast<std::uint32_t>(index.files.size()));
        if (!added) continue;
        const bool zstd = !c->storage.transforms.empty();
        index.files.push_back({(fs::path(dir) / c->storage.relative_path).string(), zstd, zstd ? c->storage.offset : 0,
                               zstd ? c->storage.length : 0});
    }
    for (const auto& b : metadata.bytes)
        if (b.fqn.find("_extra_state") != std::string::npos) index.skipped.push_back(b.fqn);

    json mine = json::array();
    collective(comm, [&] {
        for (std::size_t i = static_cast<std::size_t>(comm.rank()); i < chunks.size(); i += static_cast<std::size_t>(comm.size())) {
            auto s = formats::index_dcp_chunk(dir, *chunks[i].first, *chunks[i].second);
            s.file = file_index.at(file_key(chunks[i].second->storage));
            mine.push_back({{"i", i}, {"t", plan::to_json(s)}});
        }
    });
    index.tensors.resize(chunks.size());
    for (const auto& bytes : comm.all_gather(to_bytes(mine)))
        for (const auto& part : from_bytes(bytes)) index.tensors[part["i"].get<std::size_t>()] = plan::source_tensor_from_json(part["t"]);
    const json common = from_root(comm, [&] {
        const auto c = formats::read_common_state(dir, metadata);
        return json{{"args", c.args}, {"iteration", c.iteration}};
    });
    index.args = common["args"];
    index.iteration = common["iteration"];
    return index;
}

void create_output_files(const plan::OutputLayout& layout, const std::string& dir) {
    for (const auto& f : layout.files) {
        io::File file((fs::path(dir) / f.name).string(), io::File::Mode::CreateTruncate);
        file.truncate(f.size);
        file.write_at(0, std::as_bytes(std::span(f.header.data(), f.header.size())));
    }
}

void write_text(const std::string& path, const std::string& text) {
    io::File f(path, io::File::Mode::CreateTruncate);
    f.write_at(0, std::as_bytes(std::span(text.data(), text.size())));
}

void copy_assets(const std::string& assets, const std::string& dir) {
    if (assets.empty()) return;
    std::error_code ec;
    if (!fs::is_directory(assets, ec)) throw Error(assets, "--assets is not a folder");
    for (const auto& e : fs::directory_iterator(assets)) {
        if (!e.is_regular_file()) continue;
        const auto name = e.path().filename().string();
        // The converter owns the weights and config; an asset must not replace them.
        if (name == "config.json" || name.ends_with(".safetensors") || name == "model.safetensors.index.json") continue;
        fs::copy_file(e.path(), fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
        if (ec) throw Error(e.path().string(), "cannot copy asset: " + ec.message());
    }
}

}  // namespace

ConvertSummary convert(const Comm& comm, const ConvertOptions& options) {
    const auto start = Clock::now();
    const bool root = comm.rank() == 0;
    const std::uint64_t read_before = io::process_bytes_read();

    // discover
    const json where = from_root(comm, [&] {
        const auto loc = formats::discover_checkpoint(options.input, options.iteration);
        return json{{"dir", loc.iteration_dir}, {"format", loc.format}};
    });
    const std::string iteration_dir = where["dir"];
    if (root) spdlog::info("checkpoint {} ({} format), {} rank(s)", iteration_dir, where["format"].get<std::string>(), comm.size());

    // staging folder (rank 0 owns it; every rank writes into it)
    std::unique_ptr<io::StagingDir> staging;
    const json staged = from_root(comm, [&] {
        staging = std::make_unique<io::StagingDir>(options.output, options.overwrite);
        return json(staging->path());
    });
    const std::string staging_dir = staged;

    // index
    const plan::SourceIndex index =
        where["format"] == "torch_dist" ? index_torch_dist(comm, iteration_dir) : index_legacy(comm, iteration_dir);

    // plan (pure, the same on every rank)
    model::ModelSpec spec;
    model::Mapping mapping;
    plan::ConversionPlan conversion;
    std::vector<std::string> outputs;
    collective(comm, [&] {
        spec = model::model_spec_from_args(index.args, {options.arch, options.num_key_value_heads}, index.files.front().name());
        mapping = model::map_tensors(spec, index, {options.dtype, options.vocab_size});
        plan::PlanLimits limits;
        limits.ranks = comm.size();
        // Each round holds a send buffer, a receive buffer and the windows being assembled.
        limits.round_bytes = std::clamp<std::uint64_t>(options.memory_budget / 3, 1, (1ull << 31) - 1);
        limits.window_bytes = std::min<std::uint64_t>(limits.round_bytes, 64ull << 20);
        conversion = plan::make_conversion_plan(index, mapping, options.max_shard_size, limits);
    });
    for (const auto& f : conversion.layout.files) outputs.push_back((fs::path(staging_dir) / f.name).string());
    if (root) {
        spdlog::info("model: {} ({} layers, hidden {}, {} heads / {} KV heads), TP {} PP {} VPP {}",
                     model::arch_name(spec.arch), spec.num_layers, spec.hidden_size, spec.num_heads,
                     spec.num_query_groups, spec.tp, spec.pp, spec.vpp);
        spdlog::info("plan: {} tensors, {} in {} file(s), {} round(s); skipping {} extra-state entries",
                     mapping.outputs.size(), format_bytes(conversion.layout.total_size), conversion.layout.files.size(),
                     conversion.transfers.rounds.size(), index.skipped.size());
        for (const auto& s : mapping.ignored) spdlog::debug("not converted: {}", s);
    }

    collective(comm, [&] {
        if (root) create_output_files(conversion.layout, staging_dir);
    });

    // move
    const auto move_start = Clock::now();
    auto last_log = move_start;
    const auto describe = [&](std::uint32_t tag) {
        const auto& c = mapping.copies.at(tag);
        return index.files[index.tensors[c.src].file].name() + ": " + index.tensors[c.src].key + " -> " +
               mapping.outputs[c.dst].name;
    };
    const auto stats = exchange::execute_transfers(
        comm, conversion.transfers, index.files, outputs, describe, [&](std::size_t round, std::uint64_t done) {
            const auto now = Clock::now();
            if (!root || (now - last_log < std::chrono::seconds(2) && round + 1 != conversion.transfers.rounds.size()))
                return;
            last_log = now;
            const double s = std::chrono::duration<double>(now - move_start).count();
            spdlog::info("progress: {} / {} ({:.0f}%), {:.2f} GB/s", format_bytes(done),
                         format_bytes(conversion.transfers.total_bytes),
                         100.0 * static_cast<double>(done) / static_cast<double>(std::max<std::uint64_t>(1, conversion.transfers.total_bytes)),
                         s > 0 ? static_cast<double>(done) / s / 1e9 : 0.0);
        },
        options.memory_budget / 4);

    // finish
    collective(comm, [&] {
        if (!root) return;
        const DType written = options.dtype.value_or(spec.params_dtype);
        write_text((fs::path(staging_dir) / "config.json").string(),
                   model::hf_config(spec, index.args, mapping.vocab_size, written).dump(2) + "\n");
        if (conversion.layout.index_json)
            write_text((fs::path(staging_dir) / "model.safetensors.index.json").string(), *conversion.layout.index_json);
        copy_assets(options.assets, staging_dir);
    });
    ConvertSummary summary;
    summary.bytes_read = comm.sum(stats.bytes_read);
    summary.process_bytes_read = comm.sum(io::process_bytes_read() - read_before);
    summary.bytes_written = comm.sum(stats.bytes_written);
    collective(comm, [&] {
        if (root) staging->commit();
    });
    summary.tensors = mapping.outputs.size();
    summary.model_bytes = conversion.model_bytes;
    summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return summary;
}

}  // namespace m2h::pipeline
