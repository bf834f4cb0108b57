#include "pipeline/source_indexing.hpp"

#include <filesystem>
#include <map>
#include <utility>

#include "common/error.hpp"
#include "common/fault_injection.hpp"
#include "formats/checkpoint_discovery.hpp"
#include "formats/legacy_checkpoint.hpp"
#include "formats/torch_dist_checkpoint.hpp"
#include "pipeline/from_root.hpp"

namespace m2h::pipeline {
namespace fs = std::filesystem;
using nlohmann::json;
using exchange::collective;

namespace {

// The indexes of the parts i = rank, rank + size, ... of `count`.
template <typename IndexPart>
json strided(std::size_t count, int rank, int size, IndexPart index_part) {
    json mine = json::array();
    for (auto i = static_cast<std::size_t>(rank); i < count; i += static_cast<std::size_t>(size))
        mine.push_back({{"i", i}, {"part", index_part(i)}});
    return mine;
}

// Each rank indexes every size-th rank file.
void share_legacy(IndexShare& share, int rank, int size) {
    const auto files = formats::list_legacy_rank_files(share.iteration_dir);
    share.listing = json::array();
    for (const auto& f : files)
        share.listing.push_back({{"path", f.path}, {"tp", f.tp}, {"pp", f.pp}, {"ep", f.ep}, {"numbers", f.numbers}});
    share.part_count = files.size();
    share.parts = strided(files.size(), rank, size, [&](std::size_t i) {
        return tensors::to_json(formats::index_legacy_rank_file(files[i], static_cast<std::uint32_t>(i)));
    });
}

// Every rank parses .metadata (one file) and indexes every size-th model chunk's embedded archive; rank 0
// reads the common state (args, iteration).
void share_torch_dist(IndexShare& share, int rank, int size) {
    const auto metadata = formats::read_dcp_metadata(share.iteration_dir);
    const auto chunks = formats::model_chunks(metadata);
    auto& index = share.skeleton;
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
        index.files.push_back({(fs::path(share.iteration_dir) / c->storage.relative_path).string(), zstd,
                               zstd ? c->storage.offset : 0, zstd ? c->storage.length : 0});
    }
    for (const auto& b : metadata.bytes)
        if (b.fqn.find("_extra_state") != std::string::npos) index.skipped.push_back(b.fqn);
    share.listing = index.files.size();
    share.part_count = chunks.size();
    share.parts = strided(chunks.size(), rank, size, [&](std::size_t i) {
        auto s = formats::index_dcp_chunk(share.iteration_dir, *chunks[i].first, *chunks[i].second);
        s.file = file_index.at(file_key(chunks[i].second->storage));
        return tensors::to_json(s);
    });
    if (rank != 0) return;
    auto common = formats::read_common_state(share.iteration_dir, metadata);
    index.args = std::move(common.args);
    index.iteration = common.iteration;
}

}  // namespace

IndexShare index_share(const std::string& input, const std::string& iteration, int rank, int size) noexcept {
    IndexShare share;
    try {
        try {
            const auto where = formats::discover_checkpoint(input, iteration);
            share.iteration_dir = where.iteration_dir;
            share.format = where.format;
            if (share.format == "torch_dist")
                share_torch_dist(share, rank, size);
            else
                share_legacy(share, rank, size);
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {  // a parser's own exception: still one line naming the checkpoint
            throw Error(share.iteration_dir.empty() ? input : share.iteration_dir, e.what());
        }
    } catch (...) {
        share.error = std::current_exception();
    }
    return share;
}

IndexedCheckpoint gather_index(const exchange::Comm& comm, IndexShare share) {
    collective(comm, [&] {
        fault_point(comm.rank(), "index");
        if (share.error) std::rethrow_exception(share.error);
    });
    const auto all = all_gather_json(comm, {{"listing", share.listing}, {"parts", share.parts},
                                            {"args", share.skeleton.args}, {"iteration", share.skeleton.iteration}});
    collective(comm, [&] {
        for (const auto& from : all)
            if (from["listing"] != share.listing)
                throw Error(share.iteration_dir, "the ranks found different shards: the folder changed while it was being indexed");
    });
    IndexedCheckpoint out{share.iteration_dir, share.format, {}};
    if (share.format == "torch_dist") {
        out.index = std::move(share.skeleton);
        out.index.tensors.resize(share.part_count);
        for (const auto& from : all)
            for (const auto& p : from["parts"]) out.index.tensors[p["i"].get<std::size_t>()] = tensors::source_tensor_from_json(p["part"]);
        out.index.args = all.front()["args"];
        out.index.iteration = all.front()["iteration"];
        return out;
    }
    std::vector<formats::LegacyRankFile> files;
    for (const auto& f : share.listing) files.push_back({f["path"], f["tp"], f["pp"], f["ep"], f["numbers"]});
    std::vector<tensors::SourceIndex> parts(files.size());
    for (const auto& from : all)
        for (const auto& p : from["parts"]) parts[p["i"].get<std::size_t>()] = tensors::source_index_from_json(p["part"]);
    collective(comm, [&] { out.index = formats::merge_legacy_indexes(std::move(files), std::move(parts)); });
    return out;
}

}  // namespace m2h::pipeline
